"""ITRA stage 1: greedy initialisation on the relaxed objective (method.md section 4).

    G(S) = (1/V) sum_j min_{i in S} C_ij

is the facility-location (k-median) objective: the gain of adding e, sum_j max(m_j - C_ej, 0)
with m_j the current best cost of column j, can only shrink as S grows. Lazy evaluation keeps
stale gains in a priority queue and re-evaluates only the top; because stale gains bound fresh
ones from above (also in floating point: every term is monotone and is summed in a fixed order),
it picks exactly what the naive loop picks, ties going to the smaller index.

Once every remaining candidate gains exactly zero (G has reached its minimum over the whole
pool: the picks already hold every validation sample's cheapest training sample), G no longer
tells candidates apart. ``saturation="capacity"`` (the default) then continues on the exact
transport with every pick at its final capacity (:mod:`goracs.select.capacity`);
``saturation="index"`` keeps the plain loop, which takes zero-gain candidates in index order.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numba
import numpy as np

from goracs.select.capacity import PartialTransport, capacity_fill

STOP_RULES = ("exact", "assigned")
# What picks the rest once the relaxed gains are all zero: least fill cost on the capacitated
# transport, or the smallest index (the plain greedy's tie-break).
SATURATION_RULES = ("capacity", "index")


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
def _lazy_greedy(cost, first, n, stop_assigned, max_picks, stop_at_zero):
    """Returns the picks, each one's relaxed mass (columns it is cheapest for), each one's gain
    when picked (sum over columns; inf for the first) and whether the gains ran out
    (``stop_at_zero``: stop, without picking, once the best remaining gain is zero)."""
    n_rows, nv = cost.shape
    best = np.empty(nv)
    owner = np.zeros(nv, dtype=np.int64)  # position in `picks` of each column's cheapest pick
    for j in range(nv):
        best[j] = np.float64(cost[first, j])
    picks = np.empty(max_picks, dtype=np.int64)
    mass = np.zeros(max_picks, dtype=np.int64)
    gain_of = np.empty(max_picks)
    picks[0] = first
    mass[0] = nv
    gain_of[0] = np.inf
    n_picks = 1
    with_mass = 1
    saturated = False
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
        if stop_at_zero and -neg <= 0.0:
            # the best fresh gain is zero, and stale gains bound fresh ones: all are zero
            saturated = True
            break
        pos = n_picks
        picks[pos] = e
        gain_of[pos] = -neg
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
    return picks[:n_picks], mass[:n_picks], gain_of[:n_picks], saturated


@dataclass
class GreedyResult:
    """What the initialisation picked and how.

    ``indices``: the n training rows in pick order (for ``stop="assigned"``, the rows with
    relaxed mass first). ``gains``: the drop in V * G (summed over validation samples) each
    pick made when it was picked (inf for the first, 0 for every pick made after the gains ran
    out). ``positive_gain_picks``: how
    many picks had a positive relaxed gain. ``capacity_picks``: how many were chosen by fill
    cost. ``transport``: with ``capacity_picks > 0``, the final capacitated transport, an
    optimal plan for POO of ``indices`` (else None).
    """

    indices: np.ndarray
    gains: np.ndarray
    positive_gain_picks: int
    capacity_picks: int
    transport: PartialTransport | None = None


def greedy_select(cost: np.ndarray, n: int, stop: str = "exact",
                  saturation: str = "capacity") -> GreedyResult:
    """Greedy minimisation of the relaxed objective G, continued past saturation.

    ``stop="exact"`` stops at n picks. ``stop="assigned"`` (the reference's rule) keeps adding
    until n picks each receive relaxed mass (are some validation point's cheapest pick), then
    drops the picks that receive none. When every remaining gain is zero before that,
    ``saturation="capacity"`` keeps the picks so far (for ``"assigned"``, those with mass) and
    adds the rest by least fill cost on the capacitated transport; ``saturation="index"``
    goes on with the plain loop, whose zero-gain picks come in index order.
    """
    if stop not in STOP_RULES:
        raise ValueError(f"stop must be one of {STOP_RULES}, got {stop!r}")
    if saturation not in SATURATION_RULES:
        raise ValueError(f"saturation must be one of {SATURATION_RULES}, got {saturation!r}")
    n_rows = cost.shape[0]
    fill = saturation == "capacity"
    first = int(np.argmin(_row_sums(cost)))
    if stop == "exact":
        picks, _, gains, saturated = _lazy_greedy(cost, first, n, False, n, fill)
    else:
        picks, mass, gains, saturated = _lazy_greedy(cost, first, n, True, n_rows, fill)
        kept = mass > 0
        if saturated:
            picks, gains = picks[kept], gains[kept]
        else:
            # every remaining sample ties an earlier pick: top up with the next zero-mass picks
            short = max(n - int(kept.sum()), 0)
            extra = np.flatnonzero(~kept)[:short]
            picks = np.concatenate([picks[kept], picks[extra]])[:n]
            gains = np.concatenate([gains[kept], gains[extra]])[:n]
    transport = None
    if saturated and picks.shape[0] < n:
        k0 = picks.shape[0]
        picks, transport = capacity_fill(cost, picks, n)
        gains = np.concatenate([gains, np.zeros(n - k0)])
    return GreedyResult(indices=picks.copy(), gains=gains.copy(),
                        positive_gain_picks=int(np.sum(gains > 0)),
                        capacity_picks=0 if transport is None else n - k0,
                        transport=transport)


def greedy_init(cost: np.ndarray, n: int, stop: str = "exact",
                saturation: str = "capacity") -> np.ndarray:
    """The ``n`` training indices :func:`greedy_select` picks, in pick order."""
    return greedy_select(cost, n, stop=stop, saturation=saturation).indices


def relaxed_objective(cost: np.ndarray, indices: np.ndarray) -> float:
    """G(S) = mean over validation columns of the cheapest cost within S."""
    return float(np.mean(np.min(cost[np.asarray(indices)], axis=0), dtype=np.float64))
