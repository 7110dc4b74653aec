"""Slow reference implementations the selection tests check the engine against.

Each one computes what a fast path of :mod:`goracs.select` must reproduce exactly, the plain
way: the greedy loop with every gain recomputed at every step (method.md section 4, greedy
initialisation) and the marginal-impact function F_i(t) evaluated pointwise (method.md
section 4, refinement by exchange).
"""

from __future__ import annotations

import numpy as np

from goracs.select import SelectionData
from goracs.select.greedy import _all_gains, _row_sums


def naive_greedy(cost: np.ndarray, n: int) -> np.ndarray:
    """The plain greedy loop (every gain recomputed at every step); for checking
    :func:`goracs.select.greedy.greedy_init`."""
    first = int(np.argmin(_row_sums(cost)))
    best = cost[first].astype(np.float64)
    picks = [first]
    chosen = np.zeros(cost.shape[0], dtype=bool)
    chosen[first] = True
    while len(picks) < n:
        gains = _all_gains(cost, best)
        gains[chosen] = -np.inf
        e = int(np.argmax(gains))
        picks.append(e)
        chosen[e] = True
        np.minimum(best, cost[e], out=best)
    return np.array(picks, dtype=np.int64)


def impact_function(d: np.ndarray, t: np.ndarray, n_sel: int) -> np.ndarray:
    """The concave function t -> t/|S| + (1/V) sum_j min(d_j - t, 0), at every ``t``; for
    checking :func:`goracs.select.marginal.marginal_impact`."""
    d = np.asarray(d, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    return t / n_sel + np.minimum(d[None, :] - t[:, None], 0.0).sum(axis=1) / d.shape[0]


def random_instance(seed: int, n_train: int = 3000, n_valid: int = 800, dim: int = 32,
             labels: bool = False, saturate: bool = False) -> SelectionData:
    rng = np.random.default_rng(seed)
    g = rng.uniform(1.0, 5.0, size=n_train).astype(np.float32)
    if saturate:  # a few samples with large gradients own every validation point
        g = rng.uniform(1.0, 2.0, size=n_train).astype(np.float32)
        g[rng.choice(n_train, 12, replace=False)] *= 3
    data = SelectionData(train_emb=rng.normal(size=(n_train, dim)).astype(np.float32),
                         valid_emb=rng.normal(size=(n_valid, dim)).astype(np.float32),
                         grad_norms=g)
    if labels:
        data.train_labels = rng.integers(0, 2, size=n_train)
        data.valid_labels = rng.integers(0, 2, size=n_valid)
    return data
