"""Resumable chunked computation: long model passes keep each finished chunk on disk, so an
interrupted evaluation picks up where it stopped."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from goracs.io import atomic_save_npy, atomic_write_json, read_json


def chunked(
    n: int,
    chunk: int,
    work_dir: Path,
    compute: Callable[[int, int], Any],
    *,
    kind: str,
    desc: str,
    progress: bool = True,
) -> list[Any]:
    """Run ``compute(start, stop)`` over ``[0, n)`` in chunks, keeping each result in
    ``work_dir``.

    Parameters
    ----------
    n, chunk : int
        Number of items and items per chunk.
    work_dir : Path
        Folder for the chunk files; a chunk already there is read back instead of computed.
        The caller keys the folder by everything that shapes the results.
    compute : callable
        Returns an array (``kind="npy"``) or a JSON-serialisable list (``kind="json"``) for
        items ``start`` to ``stop``.

    Returns
    -------
    list
        The chunk results in order.
    """
    from tqdm import tqdm

    work_dir.mkdir(parents=True, exist_ok=True)
    starts = list(range(0, n, chunk))
    ext = ".npy" if kind == "npy" else ".json"

    def path(s: int) -> Path:
        return work_dir / f"chunk-{s:08d}-{min(n, s + chunk):08d}{ext}"

    done = sum(min(n, s + chunk) - s for s in starts if path(s).is_file())
    results: list[Any] = []
    with tqdm(total=n, initial=done, desc=desc, unit="item", file=sys.stderr,
              disable=not progress, dynamic_ncols=True) as bar:
        for s in starts:
            stop = min(n, s + chunk)
            p = path(s)
            if p.is_file():
                if kind == "npy":
                    results.append(np.load(p, allow_pickle=False))
                else:
                    results.append(read_json(p))
                continue
            value = compute(s, stop)
            if kind == "npy":
                atomic_save_npy(p, value)
            else:
                atomic_write_json(p, value, indent=None)
            results.append(value)
            bar.update(stop - s)
    return results
