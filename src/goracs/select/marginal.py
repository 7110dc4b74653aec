"""Marginal impact of adding or removing one sample (method.md section 4, Theorem 4.3).

With the coreset duals x* fixed, f_ij = min_{k in S, k != i} (C_kj - x*_k) and
d_ij = C_ij - f_ij. The most sample i can add to the dual objective is

    F_i = max_t [ t / |S| + (1/V) sum_j min(d_ij - t, 0) ],

concave and piecewise linear in t, with slope 1/|S| - #{j: d_ij < t} / V; it is maximised at
t* = the R-th smallest d_ij, R = ceil(V / |S|), where

    F_i = t* / |S| + (1/V) sum_{k < R} (d_(k) - t*).
"""

from __future__ import annotations

import math

import numba
import numpy as np

_COL_BLOCK = 256


@numba.njit(parallel=True, cache=True)
def _two_smallest(cost, rows, x):
    """Per column: smallest and second smallest C_kj - x_k over k in S, and the argmin slot."""
    nv = cost.shape[1]
    b1 = np.full(nv, np.inf)
    b2 = np.full(nv, np.inf)
    a1 = np.full(nv, -1, dtype=np.int64)
    n_blocks = (nv + _COL_BLOCK - 1) // _COL_BLOCK
    for blk in numba.prange(n_blocks):
        lo = blk * _COL_BLOCK
        hi = min(nv, lo + _COL_BLOCK)
        for s in range(rows.shape[0]):
            r = rows[s]
            xs = x[s]
            for j in range(lo, hi):
                val = np.float64(cost[r, j]) - xs
                if val < b1[j]:
                    b2[j] = b1[j]
                    b1[j] = val
                    a1[j] = s
                elif val < b2[j]:
                    b2[j] = val
    return b1, b2, a1


@numba.njit(parallel=True, cache=True)
def _impacts(cost, which, slot_of_row, b1, b2, a1, r_small, n_sel):
    nv = cost.shape[1]
    out = np.empty(which.shape[0])
    for t in numba.prange(which.shape[0]):
        i = which[t]
        s = slot_of_row[i]
        buf = np.full(r_small, np.inf)  # the r_small smallest d_ij, ascending
        for j in range(nv):
            f = b2[j] if (s >= 0 and a1[j] == s) else b1[j]
            d = np.float64(cost[i, j]) - f
            if d < buf[r_small - 1]:
                k = r_small - 1
                while k > 0 and buf[k - 1] > d:
                    buf[k] = buf[k - 1]
                    k -= 1
                buf[k] = d
        t_star = buf[r_small - 1]
        acc = 0.0
        for k in range(r_small - 1):
            acc += buf[k] - t_star
        out[t] = t_star / n_sel + acc / nv
    return out


def marginal_impact(
    cost: np.ndarray, indices: np.ndarray, duals: np.ndarray, rows: np.ndarray | None = None
) -> np.ndarray:
    """F_i for the training rows ``rows`` (default: all), given coreset ``indices`` and duals.

    For a row inside S the c-transform leaves that row out (f over S - i); for a row outside S
    it runs over all of S. High F inside S marks a sample worth removing; low F outside S marks
    one worth adding.
    """
    idx = np.asarray(indices, dtype=np.int64)
    n_sel, nv = idx.shape[0], cost.shape[1]
    if n_sel < 2:
        raise ValueError("marginal impact needs a coreset of at least 2 samples")
    which = np.arange(cost.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    slot_of_row = np.full(cost.shape[0], -1, dtype=np.int64)
    slot_of_row[idx] = np.arange(n_sel)
    b1, b2, a1 = _two_smallest(cost, idx, np.asarray(duals, dtype=np.float64))
    r_small = math.ceil(nv / n_sel)
    return _impacts(cost, which, slot_of_row, b1, b2, a1, r_small, float(n_sel))
