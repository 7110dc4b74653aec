"""ITRA without the dense cost matrix: every stage of method.md section 4 over row blocks.

The design (what is computed blockwise, what is held, the peak memory formula) is in
:mod:`goracs.select.cost_blocks`. Here each stage of the dense engine gets its streaming
form, choosing exactly what the dense one chooses:

- *Greedy initialisation* (:func:`greedy_select_streaming`): the row sums and the first
  relaxed gains in one pass each; then lazy evaluation with a heap as in
  :mod:`goracs.select.greedy`, except that the stale entries at the top of the heap are
  re-evaluated a batch at a time (their rows computed in one GEMM). Stale gains bound fresh
  ones from above, so the pick -- the largest fresh gain, ties to the smaller index -- does not
  depend on which stale entries were refreshed first.
- *Past saturation*: the fill costs of every row in one pass, then the same lazy rule on
  fill costs (which only rise); the partial transport of :mod:`goracs.select.capacity` runs
  unchanged on the compact matrix of the picks.
- *Exact transport and swaps*: :class:`~goracs.select.transport.TransportState` on the
  compact matrix; :class:`PoolState` speaks pool indices to :func:`goracs.select.refine.refine`
  and fetches a swap candidate's row when it is tried.
- *Medoid rounds* (:func:`alternate_streaming`): each round's slot costs block by block,
  keeping each block's k cheapest outside rows per slot (ties to the smaller row) and folding
  them into the pool's k cheapest.
- *Marginal impacts* (:func:`impact_function`): the c-transform over the coreset's rows, then
  every row's F_i block by block.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable

import numba
import numpy as np

from goracs.select.capacity import PartialTransport, _add_row, _fill_costs
from goracs.select.cost_blocks import CostBlocks, RowStore
from goracs.select.greedy import SATURATION_RULES, STOP_RULES, GreedyResult, _all_gains, _row_sums
from goracs.select.marginal import _impacts, _two_smallest
from goracs.select.medoid import MedoidResult, _slot_costs, medoid_moves
from goracs.select.transport import TransportState

# Stale heap entries refreshed together (one GEMM for their rows).
BATCH = 32


@numba.njit(cache=True)
def _take(row, best, owner, mass, pos):
    """Make pick ``pos`` (cost row ``row``) the owner of the columns it is cheapest for;
    returns the change in the number of picks that own a column."""
    delta = 0
    for j in range(best.shape[0]):
        c = np.float64(row[j])
        if c < best[j]:
            best[j] = c
            old = owner[j]
            mass[old] -= 1
            if mass[old] == 0:
                delta -= 1
            if mass[pos] == 0:
                delta += 1
            mass[pos] += 1
            owner[j] = pos
    return delta


@numba.njit(inline="always")
def _enters(best_val, best_idx, s, x, r):
    """Whether (value ``x``, row ``r``) is among slot ``s``'s k smallest so far: (value,
    row) ordered lexicographically, ties to the smaller row."""
    k = best_val.shape[0]
    w = best_val[k - 1, s]
    return x < w or (x == w and r < best_idx[k - 1, s])


@numba.njit(inline="always")
def _insert(best_val, best_idx, s, x, r):
    """Put (``x``, ``r``) into slot ``s``'s ascending list, dropping its largest."""
    t = best_val.shape[0] - 1
    while t > 0 and (best_val[t - 1, s] > x
                     or (best_val[t - 1, s] == x and best_idx[t - 1, s] > r)):
        best_val[t, s] = best_val[t - 1, s]
        best_idx[t, s] = best_idx[t - 1, s]
        t -= 1
    best_val[t, s] = x
    best_idx[t, s] = r


@numba.njit(cache=True)
def _merge_smallest(vals, start, skip, best_val, best_idx):
    """Fold a block's slot costs ``vals`` (B, n) into each slot's k smallest (value, row),
    kept ascending in ``best_val``/``best_idx`` (k, n); rows with ``skip`` are left out."""
    for i in range(vals.shape[0]):
        if skip[i]:
            continue
        r = start + i
        for s in range(vals.shape[1]):
            if _enters(best_val, best_idx, s, vals[i, s], r):
                _insert(best_val, best_idx, s, vals[i, s], r)


@numba.njit(cache=True)
def _fold_smallest(vals, rows, best_val, best_idx):
    """Fold one block's k smallest (value, row) per slot, ``vals``/``rows`` (k, n) ascending,
    into ``best_val``/``best_idx`` by the order of :func:`_merge_smallest`: (value, row) is a
    total order, so folding the blocks' lists in any order gives the whole pool's k smallest."""
    for s in range(vals.shape[1]):
        for t in range(vals.shape[0]):
            if not _enters(best_val, best_idx, s, vals[t, s], rows[t, s]):
                break  # the block's list is ascending: the rest cannot enter either
            _insert(best_val, best_idx, s, vals[t, s], rows[t, s])


# What one pass computes for one block of cost rows ``blk`` (its first pool row ``start``):
# module-level functions of the block and the pass's arguments alone, so that
# :meth:`CostBlocks.map` may run them in a Ray task as well as here.

def _block_row_sums(start: int, blk: np.ndarray) -> np.ndarray:
    """The block's row sums (greedy's first pick)."""
    return _row_sums(blk)


def _block_gains(start: int, blk: np.ndarray, best: np.ndarray) -> np.ndarray:
    """The block's relaxed gains against the column minima ``best``."""
    return _all_gains(blk, best)


def _block_fill_costs(start: int, blk: np.ndarray, v: np.ndarray, p: float, q: float,
                      m: int) -> np.ndarray:
    """The block's fill costs at column prices ``v`` (:mod:`goracs.select.capacity`)."""
    return _fill_costs(blk, np.arange(blk.shape[0], dtype=np.int64), v, p, q, m)


def _block_impacts(start: int, blk: np.ndarray, coreset: np.ndarray, b1: np.ndarray,
                   b2: np.ndarray, a1: np.ndarray, r_small: int, n_sel: float) -> np.ndarray:
    """The block's marginal impacts; ``coreset`` holds the pool row of each coreset slot."""
    m = blk.shape[0]
    inside = (coreset >= start) & (coreset < start + m)
    slot_of_row = np.full(m, -1, dtype=np.int64)
    slot_of_row[coreset[inside] - start] = np.flatnonzero(inside)
    return _impacts(blk, np.arange(m, dtype=np.int64), slot_of_row, b1, b2, a1, r_small, n_sel)


def _block_smallest(start: int, blk: np.ndarray, coreset: np.ndarray, col_slot: np.ndarray,
                    col_flow: np.ndarray, col_deg: np.ndarray, n: int, p: float, k: int,
                    n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The block's k cheapest outside rows per medoid slot (value, row), ascending;
    ``coreset`` holds the coreset's pool rows, sorted."""
    m = blk.shape[0]
    vals = _slot_costs(blk, col_slot, col_flow, col_deg, n, p)
    lo, hi = np.searchsorted(coreset, [start, start + m])
    skip = np.zeros(m, dtype=np.bool_)
    skip[coreset[lo:hi] - start] = True
    best_val = np.full((k, n), np.inf, dtype=np.float32)
    best_idx = np.full((k, n), n_rows, dtype=np.int64)
    _merge_smallest(vals, start, skip, best_val, best_idx)
    return best_val, best_idx


def _refresh(store: RowStore, heap: list, stamp: np.ndarray, now: int, first: int,
             score: Callable[[np.ndarray], np.ndarray], sign: float) -> None:
    """Re-evaluate the stale entry ``first`` (just popped) and the stale ones above the rest
    of the heap, up to :data:`BATCH`, and push them back with their fresh keys."""
    stale = [first]
    while heap and len(stale) < BATCH and stamp[heap[0][1]] != now:
        stale.append(heapq.heappop(heap)[1])
    keys = score(store.slots(stale))
    for e, key in zip(stale, keys.tolist(), strict=True):
        stamp[e] = now
        heapq.heappush(heap, (sign * key, e))


def greedy_select_streaming(blocks: CostBlocks, store: RowStore, n: int, stop: str = "exact",
                            saturation: str = "capacity"
                            ) -> tuple[GreedyResult, PartialTransport | None]:
    """:func:`goracs.select.greedy.greedy_select` over cost blocks: the same picks.

    Returns the result (pool indices; its ``transport`` left None) and, with capacity picks,
    the final partial transport on ``store``'s compact matrix, whose picks stay pinned.
    """
    if stop not in STOP_RULES:
        raise ValueError(f"stop must be one of {STOP_RULES}, got {stop!r}")
    if saturation not in SATURATION_RULES:
        raise ValueError(f"saturation must be one of {SATURATION_RULES}, got {saturation!r}")
    n_rows, nv = blocks.shape
    fill = saturation == "capacity"
    sums = blocks.gather(_block_row_sums)
    first = int(np.argmin(sums))
    del sums
    best = store.array[store.slots([first])[0]].astype(np.float64)
    gains = blocks.gather(_block_gains, best)
    stop_assigned = stop == "assigned"
    max_picks = n_rows if stop_assigned else n
    owner = np.zeros(nv, dtype=np.int64)
    mass = np.zeros(max_picks, dtype=np.int64)
    picks, gain_of = [first], [np.inf]
    mass[0] = nv
    with_mass = 1
    saturated = False
    fresh = np.ones(n_rows, dtype=np.int64)
    heap = [(-g, e) for e, g in enumerate(gains.tolist()) if e != first]
    del gains
    heapq.heapify(heap)
    while heap:
        n_picks = len(picks)
        if (with_mass >= n) if stop_assigned else (n_picks >= n):
            break
        if n_picks >= max_picks:
            break
        neg, e = heapq.heappop(heap)
        if fresh[e] != n_picks:
            _refresh(store, heap, fresh, n_picks, e,
                     lambda s: _all_gains(store.array[s], best), -1.0)
            continue
        if fill and -neg <= 0.0:
            saturated = True
            break
        row = store.array[store.slots([e])[0]]
        picks.append(e)
        gain_of.append(-neg)
        with_mass += _take(row, best, owner, mass, n_picks)
    picks_a = np.asarray(picks, dtype=np.int64)
    gains_a = np.asarray(gain_of)
    if stop_assigned:
        kept = mass[: picks_a.shape[0]] > 0
        if saturated:
            picks_a, gains_a = picks_a[kept], gains_a[kept]
        else:
            short = max(n - int(kept.sum()), 0)
            extra = np.flatnonzero(~kept)[:short]
            picks_a = np.concatenate([picks_a[kept], picks_a[extra]])[:n]
            gains_a = np.concatenate([gains_a[kept], gains_a[extra]])[:n]
    pt = None
    k0 = picks_a.shape[0]
    if saturated and k0 < n:
        picks_a, pt = _capacity_fill_streaming(blocks, store, picks_a, n)
        gains_a = np.concatenate([gains_a, np.zeros(n - k0)])
    result = GreedyResult(indices=picks_a, gains=gains_a,
                          positive_gain_picks=int(np.sum(gains_a > 0)),
                          capacity_picks=0 if pt is None else n - k0)
    return result, pt


def _capacity_fill_streaming(blocks: CostBlocks, store: RowStore, start: np.ndarray, n: int
                             ) -> tuple[np.ndarray, PartialTransport]:
    """:func:`goracs.select.capacity.capacity_fill` with fill costs over cost blocks."""
    n_rows = blocks.shape[0]
    pt = PartialTransport(store.array, n)
    for row in store.slots(start, pin=True).tolist():
        pt.add(row)
    phi = blocks.gather(_block_fill_costs, pt.v, pt.p, pt.q, pt.m)
    phi[start] = np.inf
    stamp = np.full(n_rows, pt.size, dtype=np.int64)
    heap = [(f, e) for e, f in enumerate(phi.tolist()) if not math.isinf(f)]
    del phi
    heapq.heapify(heap)
    while pt.size < n:
        _, e = heapq.heappop(heap)
        if stamp[e] != pt.size:
            _refresh(store, heap, stamp, pt.size, e,
                     lambda s: _fill_costs(store.array, s, pt.v, pt.p, pt.q, pt.m), 1.0)
            continue
        slot = int(store.slots([e], pin=True)[0])
        _add_row(store.array, pt.row_id, pt.u, pt.v, pt.col_slot, pt.col_flow, pt.col_deg,
                 pt.room, pt.size, slot, pt.p, pt.order, pt.keys, pt.visits, pt.stats)
        pt.size += 1
    return store.pool_of[pt.indices], pt


class PoolState:
    """A :class:`TransportState` on the compact matrix, spoken to in pool indices.

    ``refine`` sees the interface of a dense state (``poo``, ``indices``, ``row_duals``,
    ``try_swap``, ``commit``, ``stats``); the row of an incoming sample is computed when
    its swap is first tried.
    """

    def __init__(self, store: RowStore, state: TransportState) -> None:
        self.store = store
        self.inner = state
        self._trial: tuple[int, int] | None = None

    @property
    def poo(self) -> float:
        return self.inner.poo

    @property
    def indices(self) -> np.ndarray:
        return self.store.pool_of[self.inner.indices]

    @property
    def stats(self) -> np.ndarray:
        return self.inner.stats

    def row_duals(self) -> np.ndarray:
        return self.inner.row_duals()

    def try_swap(self, out_row: int, in_row: int, threshold: float | None = None) -> float:
        """Exact POO after replacing pool row ``out_row`` (in S) by ``in_row``."""
        c_out, c_in = self.store.slots([out_row, in_row]).tolist()
        self._trial = (out_row, in_row)
        return self.inner.try_swap(c_out, c_in, threshold)

    def commit(self) -> None:
        self.inner.commit()
        self.store.pin_only(self.indices)
        self._trial = None


def impact_function(blocks: CostBlocks, store: RowStore
                    ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Marginal impacts of every pool row (:func:`goracs.select.marginal.marginal_impact`),
    computed block by block; the coreset's rows come from the compact matrix."""

    def impacts(indices: np.ndarray, duals: np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        n_sel, nv = idx.shape[0], blocks.shape[1]
        if n_sel < 2:
            raise ValueError("marginal impact needs a coreset of at least 2 samples")
        b1, b2, a1 = _two_smallest(store.array, store.slots(idx),
                                   np.asarray(duals, dtype=np.float64))
        r_small = math.ceil(nv / n_sel)
        return blocks.gather(_block_impacts, idx, b1, b2, a1, r_small, float(n_sel))

    return impacts


def alternate_streaming(blocks: CostBlocks, store: RowStore, state: TransportState,
                        max_rounds: int = 20, tol: float = 1e-4, candidates: int = 4
                        ) -> MedoidResult:
    """:func:`goracs.select.medoid.alternate` with each round's slot costs over cost blocks.

    ``state`` lives on ``store``'s compact matrix, as does the state returned.
    """
    t0 = time.perf_counter()
    trace: list[float] = []
    trace_s: list[float] = []
    n_rows = blocks.shape[0]
    n = state.indices.shape[0]
    k = min(candidates, n_rows - n)
    rounds = moves = 0
    while rounds < max_rounds and k > 0:
        f = state.flow
        rows = store.pool_of[f.row_id]
        own = _slot_costs(store.array[f.row_id], f.col_slot, f.col_flow, f.col_deg, n,
                          state.p)
        current = own[np.arange(n), np.arange(n)].astype(np.float64)
        best_val = np.full((k, n), np.inf, dtype=np.float32)
        best_idx = np.full((k, n), n_rows, dtype=np.int64)
        for _, (b_val, b_idx) in blocks.map(_block_smallest, np.sort(rows), f.col_slot,
                                            f.col_flow, f.col_deg, n, state.p, k, n_rows):
            _fold_smallest(b_val, b_idx, best_val, best_idx)
        new_rows, changed = medoid_moves(rows, current, best_idx, best_val.astype(np.float64))
        rounds += 1
        if changed == 0:
            break
        store.slots(new_rows, pin=True)
        new_state = TransportState(store.array, store.slots(new_rows))
        if new_state.poo >= state.poo:
            store.pin_only(rows)
            break
        store.pin_only(new_rows)
        improved = state.poo - new_state.poo
        state = new_state
        moves += changed
        trace.append(state.poo)
        trace_s.append(time.perf_counter() - t0)
        if improved < tol * (state.poo + improved):
            break
    return MedoidResult(state, trace, trace_s, rounds, moves)
