"""Sample embeddings from a sentence-transformers encoder, cached by content.

Texts are encoded in fixed chunks; each finished chunk is saved at once, so an interrupted run
picks up at the first missing chunk. The cache key covers the texts, the encoder's files and
every setting that changes the numbers, so a stale array is never reused.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from goracs.cache import content_key, load_parts, path_fingerprint, texts_digest
from goracs.errors import GoracsError
from goracs.io import atomic_save_npy
from goracs.models import resolve_encoder

CHUNK = 2048


ENCODER_DTYPES = ("fp32", "bf16")


def load_encoder(encoder: str | None = None, max_seq_length: int | None = None,
                 dtype: str = "fp32", device: str = "cpu") -> Any:
    """A ``SentenceTransformer`` on ``device`` (cpu, cuda[:N] or auto), from the packaged
    encoder (``None``), a folder or a hub id; never runs code shipped with the model.
    ``dtype="bf16"`` halves the encoder's precision (about twice as fast on CPUs with bfloat16
    units)."""
    import torch
    from sentence_transformers import SentenceTransformer

    if dtype not in ENCODER_DTYPES:
        raise GoracsError(f"encoder dtype must be one of {', '.join(ENCODER_DTYPES)}, "
                          f"got {dtype!r}")

    from goracs.lm import pick_device

    path = resolve_encoder(encoder)
    device = pick_device(device)
    try:
        model = SentenceTransformer(path, device=device, trust_remote_code=False)
    except Exception as exc:  # hub, file and config errors come in many types
        raise GoracsError(f"cannot load encoder {path}: {type(exc).__name__}: {exc}") from None
    if max_seq_length is not None:
        if max_seq_length < 1:
            raise GoracsError(f"encoder max length must be positive, got {max_seq_length}")
        model.max_seq_length = int(max_seq_length)
    if dtype == "bf16":
        model = model.to(torch.bfloat16)
    return model


def embedding_key(texts: Sequence[str], encoder_path: str, settings: dict[str, Any]) -> str:
    """Cache key of the embeddings of ``texts`` by the encoder at ``encoder_path``."""
    return content_key({
        "kind": "embeddings",
        "texts": texts_digest(texts),
        "encoder": path_fingerprint(encoder_path),
        "settings": settings,
    })


def embed_texts(
    texts: Sequence[str],
    encoder: str | None = None,
    *,
    batch_size: int = 64,
    max_seq_length: int | None = None,
    normalize: bool = False,
    dtype: str = "fp32",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    model: Any = None,
    device: str = "cpu",
) -> np.ndarray:
    """Embed ``texts`` with a sentence-transformers encoder.

    Parameters
    ----------
    texts : sequence of str
        What to embed (see :func:`goracs.records.embedding_texts`).
    encoder : str, optional
        Packaged encoder (``None`` or ``"all-minilm-l6-v2"``), a local folder or a hub id.
    batch_size : int
        Texts per forward pass.
    max_seq_length : int, optional
        Word pieces kept per text; the encoder's own limit when ``None``.
    normalize : bool
        Scale every embedding to unit L2 norm (on top of whatever the encoder does).
    dtype : {"fp32", "bf16"}
        Precision of the encoder (the result is float32 either way).
    cache_dir : path, optional
        Folder for the cache; without it nothing is cached.
    progress : bool
        Show a progress bar on stderr.
    model : SentenceTransformer, optional
        An already loaded encoder; ``encoder`` must then name where it came from, for the key.
    device : str
        Where a newly loaded encoder runs: ``"cpu"``, ``"cuda[:N]"`` or ``"auto"``.

    Returns
    -------
    ndarray of float32, shape (len(texts), dim)
    """
    from tqdm import tqdm

    if len(texts) == 0:
        raise GoracsError("nothing to embed: the list of texts is empty")
    if batch_size < 1:
        raise GoracsError(f"batch size must be positive, got {batch_size}")
    path = resolve_encoder(encoder)
    settings = {"batch_size": int(batch_size), "max_seq_length": max_seq_length,
                "normalize": bool(normalize), "dtype": dtype, "chunk": CHUNK}
    final = parts_dir = None
    if cache_dir is not None:
        key = embedding_key(texts, path, settings)
        final = Path(cache_dir) / f"emb-{key}.npy"
        parts_dir = Path(cache_dir) / f"emb-{key}.parts"
        if final.is_file():
            return np.load(final, allow_pickle=False)
    if model is None:
        model = load_encoder(path, max_seq_length, dtype, device)

    starts = list(range(0, len(texts), CHUNK))
    chunks = load_parts(parts_dir, "part", [len(texts[s:s + CHUNK]) for s in starts], ndim=2)
    done = sum(ch.shape[0] for ch in chunks if ch is not None)
    bar = tqdm(total=len(texts), initial=done, desc="embeddings", unit="text",
               disable=not progress, file=sys.stderr, dynamic_ncols=True)
    with bar:
        for c, s in enumerate(starts):
            if chunks[c] is not None:
                continue
            part_texts = list(texts[s:s + CHUNK])
            emb = model.encode(part_texts, batch_size=batch_size, show_progress_bar=False,
                               convert_to_numpy=True, normalize_embeddings=normalize)
            emb = np.ascontiguousarray(np.asarray(emb, dtype=np.float32))
            if parts_dir is not None:
                atomic_save_npy(parts_dir / f"part-{c:05d}.npy", emb)
            chunks[c] = emb
            bar.update(len(part_texts))
    out = np.concatenate(chunks, axis=0)
    if not np.isfinite(out).all():
        raise GoracsError("the encoder produced NaN or inf embeddings")
    if final is not None:
        atomic_save_npy(final, out)
        shutil.rmtree(parts_dir, ignore_errors=True)
    return out
