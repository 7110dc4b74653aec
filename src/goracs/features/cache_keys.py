"""Content keys of the cached scores and LLM embeddings.

A key is :func:`goracs.cache.content_key` of a document describing the inputs and settings
a result depends on. Runs in progress reuse the caches of earlier ones, so a document may
only gain an entry that appears when it differs from what the key always meant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from goracs.cache import content_key
from goracs.errors import GoracsError

# Version of the cached arrays' layout and definitions; part of every cache key.
CACHE_VERSION = 2


def ids_digest(ids: Sequence[Sequence[int]]) -> str:
    """SHA-256 hex digest of token id sequences (their count, lengths and values)."""
    import hashlib

    h = hashlib.sha256(str(len(ids)).encode())
    for seq in ids:
        arr = np.asarray(seq, dtype=np.int64)
        h.update(arr.shape[0].to_bytes(8, "little"))
        h.update(arr.tobytes())
    return h.hexdigest()


def scores_key(ids: Sequence[Sequence[int]], starts: Sequence[int] | None, *,
               identity: dict[str, Any] | None, block: str, batch_size: int,
               sort_by_length: bool, share_prefix: bool, fast: bool, loss: str,
               scores: bool = True, embed: bool = False) -> str:
    """Content key of a pool's gradient norms (and scores and embeddings).

    ``share_prefix`` is whether a prefix is actually shared (asked for, and possible on the
    route taken); ``fast`` whether the direct route is taken.
    """
    if identity is None:
        raise GoracsError("caching gradient norms needs the model identity "
                          "(load the model with load_scoring_model)")
    doc: dict[str, Any] = {
        "kind": "grad_norms", "version": CACHE_VERSION, "ids": ids_digest(ids),
        "model": identity, "block": block, "batch_size": batch_size,
        "sort_by_length": sort_by_length,
        "share_prefix": share_prefix,
        "fast": fast,
        "response_starts": None if starts is None else ids_digest([list(starts)]),
    }
    # Entries added later appear only when they differ from what the key always meant,
    # so the caches of earlier runs stay valid.
    if loss != "text":
        doc["loss"] = loss
    if starts is not None and not scores:
        doc["scores"] = False
    if embed:
        doc["embeddings"] = "mean prompt state, last layer"
    return content_key(doc)


def prompt_embeddings_key(seqs: Sequence[Sequence[int]], ends: np.ndarray, *,
                          identity: dict[str, Any] | None, batch_size: int,
                          share_prefix: bool, fast: bool) -> str:
    """Content key of the LLM embeddings of samples embedded without a gradient."""
    if identity is None:
        raise GoracsError("caching LLM embeddings needs the model identity "
                          "(load the model with load_scoring_model)")
    return content_key({
        "kind": "llm_prompt_embeddings", "version": CACHE_VERSION,
        "ids": ids_digest(seqs), "ends": ids_digest([list(ends)]),
        "model": identity, "batch_size": batch_size,
        "share_prefix": share_prefix,
        "fast": fast})
