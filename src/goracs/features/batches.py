"""Batches of a pool: token id arrays, the order samples are batched in, padding, and back.

Batches are formed from samples of similar length, so that little compute goes to padding;
the results are put back into pool order at the end. Both are exact: a sample's scores do not
depend on the batch it lands in beyond float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def as_ids(seq: Sequence[int]) -> np.ndarray:
    """One sample's token ids as a flat int32 array."""
    return np.asarray(seq, dtype=np.int32).reshape(-1)


def processing_order(ids: Sequence[Sequence[int]], sort_by_length: bool) -> np.ndarray:
    """The order in which samples are batched: by length (ties by position) or as given."""
    n = len(ids)
    if not sort_by_length:
        return np.arange(n)
    return np.lexsort((np.arange(n), np.array([len(s) for s in ids], dtype=np.int64)))


def pad_batch(seqs: Sequence[np.ndarray], start: int, pad_id: int,
              device: Any) -> tuple[Any, Any]:
    """Right-padded token ids of ``seqs`` from position ``start`` on (B, width - start), and
    the attention mask over all their positions (B, width), on ``device``."""
    import torch

    lens = [len(s) for s in seqs]
    width = max(lens)
    ids = torch.full((len(seqs), width - start), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, :lens[b] - start] = torch.from_numpy(s[start:].astype(np.int64))
        mask[b, :lens[b]] = 1
    return ids.to(device), mask.to(device)


def unsort(pieces: Sequence[np.ndarray], order: np.ndarray) -> np.ndarray:
    """Per-sample float32 values in pool order, from pieces in processing order."""
    out = np.empty(order.shape[0], dtype=np.float32)
    out[order] = np.concatenate(pieces).astype(np.float32)
    return out


def unsort_rows(pieces: Sequence[np.ndarray], order: np.ndarray) -> np.ndarray:
    """Per-sample float32 rows in pool order, from pieces in processing order."""
    rows = np.concatenate(pieces).astype(np.float32)
    out = np.empty_like(rows)
    out[order] = rows
    return out
