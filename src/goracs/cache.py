"""Content keys for cached feature arrays.

A cached array is reused only when everything that shaped it is the same: the exact texts,
the model's files and the settings. Keys are SHA-256 digests of a canonical JSON document of
those, so they are stable across runs, machines and Python versions.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Files up to this size are hashed by content; bigger ones (model weights) by name, size and
# modification time, which is enough to notice a replaced file without reading gigabytes.
CONTENT_HASH_LIMIT = 64 * 2**20


def texts_digest(texts: Sequence[str]) -> str:
    """SHA-256 of a list of texts, with lengths so that no two lists collide by concatenation."""
    h = hashlib.sha256()
    h.update(str(len(texts)).encode())
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def path_fingerprint(spec: str | os.PathLike) -> str:
    """Identify a model: a local file or folder by its files, anything else (a hub id) by name."""
    p = Path(spec)
    if not p.exists():
        return "id:" + str(spec)
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    h = hashlib.sha256()
    for q in files:
        rel = q.name if q == p else q.relative_to(p).as_posix()
        st = q.stat()
        h.update(rel.encode() + b"\0" + str(st.st_size).encode() + b"\0")
        if st.st_size <= CONTENT_HASH_LIMIT:
            with open(q, "rb") as f:
                for block in iter(lambda: f.read(2**20), b""):
                    h.update(block)
        else:
            h.update(str(st.st_mtime_ns).encode())
    return "files:" + h.hexdigest()


def content_key(doc: dict[str, Any]) -> str:
    """Hex key (24 digits) of a JSON-serialisable description of a cached result."""
    blob = json.dumps(doc, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def load_parts(parts_dir: Path | None, prefix: str, sizes: Sequence[int],
               ndim: int) -> list[np.ndarray | None]:
    """The pieces an interrupted run left in ``parts_dir``: ``{prefix}-{k:05d}.npy`` for piece
    k, kept only if it has ``ndim`` dimensions and ``sizes[k]`` rows; None for the rest."""
    found: list[np.ndarray | None] = [None] * len(sizes)
    if parts_dir is None:
        return found
    for k, size in enumerate(sizes):
        f = parts_dir / f"{prefix}-{k:05d}.npy"
        if f.is_file():
            arr = np.load(f, allow_pickle=False)
            if arr.ndim == ndim and arr.shape[0] == size:
                found[k] = arr
    return found
