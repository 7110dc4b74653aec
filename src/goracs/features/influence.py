"""DEALRec influence scores from the per-sample block gradients of a pool.

**Influence** (DEALRec, Lin et al., SIGIR 2024): the first-order growth of the empirical
risk when sample s is removed, I(s) = (1/N) gbar^T H^{-1} g_s, with the scoring LLM as its
own surrogate, g_s the block gradient whose norm is the gradient norm, gbar the mean of g_s
over the pool and H taken as the identity. Each g_s is kept (float32) in the cache shards
(:mod:`goracs.features.shards`), so one pass over the pool suffices and an interrupted run
resumes; I = G gbar / N at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def influence(grads: Sequence[np.ndarray | Path | None], n: int) -> list[np.ndarray]:
    """I(s) = (1/N) gbar^T g_s for every shard of gradients (H taken as the identity), in
    float64; shards on disk are read one at a time, twice (for gbar, then the products)."""

    def read(g: np.ndarray | Path | None) -> np.ndarray:
        assert g is not None  # every shard is complete by now
        return np.load(g, allow_pickle=False) if isinstance(g, Path) else g

    total: np.ndarray | None = None
    for g in grads:
        part = read(g).astype(np.float64).sum(axis=0)
        total = part if total is None else total + part
    gbar = total / n
    return [read(g).astype(np.float64) @ gbar / n for g in grads]
