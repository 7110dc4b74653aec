"""ITRA stage 1: greedy initialisation on the relaxed objective (method.md section 4).

    G(S) = (1/V) sum_j min_{i in S} C_ij

is the facility-location (k-median) objective: the gain of adding e, sum_j max(m_j - C_ej, 0)
with m_j the current best cost of column j, can only shrink as S grows. Lazy evaluation keeps
stale gains in a priority queue and re-evaluates only the top; because stale gains bound fresh
ones from above (also in floating point: every term is monotone and is summed in a fixed order),
it picks exactly what the naive loop picks, ties going to the smaller index.
"""

from __future__ import annotations

import heapq

import numba
import numpy as np

STOP_RULES = ("exact", "assigned")


@numba.njit(cache=True)
def _gain(cost, e, best):
    g = 0.0
    for j in range(best.shape[0]):
        d = best[j] - np.float64(cost[e, j])
        if d > 0.0:
            g += d
    return g


@numba.njit(parallel=True, cache=True)
def _all_gains(cost, best):
    out = np.empty(cost.shape[0])
    for e in numba.prange(cost.shape[0]):
        out[e] = _gain(cost, e, best)
    return out


@numba.njit(parallel=True, cache=True)
def _row_sums(cost):
    out = np.empty(cost.shape[0])
    for i in numba.prange(cost.shape[0]):
        s = 0.0
        for j in range(cost.shape[1]):
            s += np.float64(cost[i, j])
        out[i] = s
    return out


@numba.njit(cache=True)
def _lazy_greedy(cost, first, n, stop_assigned, max_picks):
    n_rows, nv = cost.shape
    best = np.empty(nv)
    owner = np.zeros(nv, dtype=np.int64)  # position in `picks` of each column's cheapest pick
    for j in range(nv):
        best[j] = np.float64(cost[first, j])
    picks = np.empty(max_picks, dtype=np.int64)
    mass = np.zeros(max_picks, dtype=np.int64)
    picks[0] = first
    mass[0] = nv
    n_picks = 1
    with_mass = 1
    gains = _all_gains(cost, best)
    fresh = np.ones(n_rows, dtype=np.int64)  # pick count at which each gain was computed
    heap = [(-gains[e], np.int64(e)) for e in range(n_rows) if e != first]
    heapq.heapify(heap)
    while len(heap) > 0:
        if stop_assigned:
            if with_mass >= n:
                break
        elif n_picks >= n:
            break
        if n_picks >= max_picks:
            break
        neg, e = heapq.heappop(heap)
        if fresh[e] != n_picks:
            fresh[e] = n_picks
            heapq.heappush(heap, (-_gain(cost, e, best), e))
            continue
        pos = n_picks
        picks[pos] = e
        n_picks += 1
        for j in range(nv):
            c = np.float64(cost[e, j])
            if c < best[j]:
                best[j] = c
                old = owner[j]
                mass[old] -= 1
                if mass[old] == 0:
                    with_mass -= 1
                if mass[pos] == 0:
                    with_mass += 1
                mass[pos] += 1
                owner[j] = pos
    return picks[:n_picks], mass[:n_picks]


def greedy_init(cost: np.ndarray, n: int, stop: str = "exact") -> np.ndarray:
    """Greedy minimisation of the relaxed objective G; returns ``n`` training indices.

    ``stop="exact"`` stops at n picks. ``stop="assigned"`` (the reference's rule) keeps adding
    until n picks each receive relaxed mass (are some validation point's cheapest pick), then
    drops the picks that receive none. Indices come in pick order.
    """
    if stop not in STOP_RULES:
        raise ValueError(f"stop must be one of {STOP_RULES}, got {stop!r}")
    n_rows = cost.shape[0]
    first = int(np.argmin(_row_sums(cost)))
    if stop == "exact":
        picks, _ = _lazy_greedy(cost, first, n, False, n)
        return picks.copy()
    picks, mass = _lazy_greedy(cost, first, n, True, n_rows)
    kept = picks[mass > 0]
    if kept.shape[0] < n:
        # every remaining sample ties an earlier pick: top up with the next zero-mass picks
        extra = picks[mass == 0][: n - kept.shape[0]]
        kept = np.concatenate([kept, extra])
    return kept[:n].copy()


def naive_greedy(cost: np.ndarray, n: int) -> np.ndarray:
    """The plain greedy loop (every gain recomputed at every step); for checking ``greedy_init``."""
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


def relaxed_objective(cost: np.ndarray, indices: np.ndarray) -> float:
    """G(S) = mean over validation columns of the cheapest cost within S."""
    return float(np.mean(np.min(cost[np.asarray(indices)], axis=0), dtype=np.float64))
