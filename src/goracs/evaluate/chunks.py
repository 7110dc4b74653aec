"""Resumable chunked computation: long model passes keep each finished chunk on disk, so an
interrupted evaluation picks up where it stopped, and the seconds each chunk took, so a
resumed evaluation reports the time of the whole pass rather than of its last part."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from goracs.io import atomic_save_npy, atomic_write_json, read_json

SECONDS_FILE = "seconds.json"


class Chunks(NamedTuple):
    """The chunk results in order, and the compute seconds recorded for the chunks read back
    from an earlier attempt (0.0 for chunks an older version left without a record)."""

    values: list[Any]
    resumed_seconds: float


def chunked(
    n: int,
    chunk: int,
    work_dir: Path,
    compute: Callable[[int, int], Any],
    *,
    kind: str,
    desc: str,
    progress: bool = True,
) -> Chunks:
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
    Chunks
        The chunk results in order, and the seconds earlier attempts spent on the chunks
        read back.
    """
    from tqdm import tqdm

    work_dir.mkdir(parents=True, exist_ok=True)
    starts = list(range(0, n, chunk))
    ext = ".npy" if kind == "npy" else ".json"

    def path(s: int) -> Path:
        return work_dir / f"chunk-{s:08d}-{min(n, s + chunk):08d}{ext}"

    done = sum(min(n, s + chunk) - s for s in starts if path(s).is_file())
    timing = work_dir / SECONDS_FILE
    spent: dict[str, float] = read_json(timing) if timing.is_file() else {}
    resumed = 0.0
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
                resumed += float(spent.get(p.name, 0.0))
                continue
            t0 = time.perf_counter()
            value = compute(s, stop)
            if kind == "npy":
                atomic_save_npy(p, value)
            else:
                atomic_write_json(p, value, indent=None)
            # recorded after the chunk, so a recorded time always belongs to a finished chunk
            spent[p.name] = round(time.perf_counter() - t0, 3)
            atomic_write_json(timing, spent, indent=None)
            results.append(value)
            bar.update(stop - s)
    return Chunks(results, round(resumed, 3))
