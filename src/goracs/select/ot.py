"""Exact optimal transport for POO, and exact re-optimisation after a swap.

POO(S) = OT_C(mu_S, mu_V) with uniform marginals 1/|S| and 1/V. Scaled by T = |S| V / g
(g = gcd(|S|, V)) it is an integer transportation problem: each coreset row supplies
p = V / g units, each validation column demands q = |S| / g units, and an optimal vertex has
integer flows. That makes an exchange cheap to re-optimise exactly: removing row i frees its p
units on a few columns; the incoming row o must ship p units; successive shortest paths on the
residual graph, with the current optimal duals as potentials (reduced costs stay >= 0), move
them at minimum cost. Each path is a Dijkstra search that usually stops after a handful of
rows, instead of a network-simplex solve from scratch.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass

import numba
import numpy as np

_INF = np.inf


def _pot():
    """POT, imported on first use. Only its NumPy path is used here, so unless POT is already
    loaded its optional framework backends stay off: importing torch alone costs seconds."""
    if "ot" not in sys.modules:
        for key in ("PYTORCH", "JAX", "CUPY", "TENSORFLOW"):
            os.environ.setdefault(f"POT_BACKEND_DISABLE_{key}", "1")
    import ot

    return ot


def exact_ot(cost: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Exact OT between uniform marginals over the rows and columns of ``cost`` (n, V).

    Returns ``(value, plan, u, v)``: the optimal value, the (n, V) plan and dual variables with
    ``u_i + v_j <= cost_ij``, equality on the plan's support (POT's network simplex).
    """
    pot = _pot()
    c = np.ascontiguousarray(cost, dtype=np.float64)
    n, v = c.shape
    a = np.full(n, 1.0 / n)
    b = np.full(v, 1.0 / v)
    plan, log = pot.emd(a, b, c, numItermax=max(10_000_000, 50 * n * v), log=True)
    if log.get("warning"):
        raise RuntimeError(f"exact OT did not converge: {log['warning']}")
    return float(np.sum(plan * c)), plan, np.asarray(log["u"]), np.asarray(log["v"])


def poo_value(cost: np.ndarray, indices: np.ndarray) -> float:
    """POO(S) for the training rows ``indices`` of the full cost matrix (exact)."""
    return exact_ot(cost[np.asarray(indices)])[0]


@dataclass
class _Flow:
    """Integer transport plan stored by column: ``slot[j, k]`` ships ``flow[j, k]`` units to j."""

    row_id: np.ndarray  # (n,) training index held by each coreset slot
    u: np.ndarray  # (n,) row duals
    v: np.ndarray  # (V,) column duals
    col_slot: np.ndarray  # (V, q) int32, -1 where unused
    col_flow: np.ndarray  # (V, q) int32
    col_deg: np.ndarray  # (V,) int32
    poo: float

    def copy(self) -> _Flow:
        return _Flow(self.row_id.copy(), self.u.copy(), self.v.copy(), self.col_slot.copy(),
                     self.col_flow.copy(), self.col_deg.copy(), self.poo)


class TransportState:
    """An optimal plan for POO(S) and its duals, kept optimal through exchanges.

    ``try_swap(i, o)`` returns the exact POO of S - i + o without changing the state;
    ``commit()`` adopts the last trial.
    """

    def __init__(self, cost: np.ndarray, indices: np.ndarray) -> None:
        self.cost = cost
        idx = np.asarray(indices, dtype=np.int64)
        n, nv = idx.shape[0], cost.shape[1]
        g = math.gcd(n, nv)
        self.p, self.q = nv // g, n // g
        self.units = n * self.p
        value, plan, u, v = exact_ot(cost[idx])
        units = np.rint(plan * self.units).astype(np.int64)
        if not (np.all(units.sum(1) == self.p) and np.all(units.sum(0) == self.q)):
            raise RuntimeError("exact OT plan is not an integer vertex; cannot warm-start")
        col_slot = np.full((nv, self.q), -1, dtype=np.int32)
        col_flow = np.zeros((nv, self.q), dtype=np.int32)
        col_deg = np.zeros(nv, dtype=np.int32)
        rows, cols = np.nonzero(units)
        for r, j in zip(rows.tolist(), cols.tolist(), strict=True):
            k = col_deg[j]
            col_slot[j, k] = r
            col_flow[j, k] = units[r, j]
            col_deg[j] = k + 1
        self._setup(idx, u, v, col_slot, col_flow, col_deg)

    @classmethod
    def from_plan(cls, cost: np.ndarray, indices: np.ndarray, u: np.ndarray, v: np.ndarray,
                  col_slot: np.ndarray, col_flow: np.ndarray, col_deg: np.ndarray
                  ) -> TransportState:
        """A state from an optimal integer plan and duals found elsewhere (no solve).

        The plan is stored by column as here (slot ``col_slot[j, k]`` ships ``col_flow[j, k]``
        units to column j); slots follow ``indices``. Row and column sums, dual feasibility
        and complementary slackness (to 1e-9) are checked: a plan that passes is optimal.
        """
        self = cls.__new__(cls)
        self.cost = cost
        idx = np.asarray(indices, dtype=np.int64)
        n, nv = idx.shape[0], cost.shape[1]
        g = math.gcd(n, nv)
        self.p, self.q = nv // g, n // g
        self.units = n * self.p
        if col_slot.shape != (nv, self.q) or col_flow.shape != (nv, self.q):
            raise ValueError("plan arrays do not match the coreset size")
        self._setup(idx, np.asarray(u, dtype=np.float64).copy(),
                    np.asarray(v, dtype=np.float64).copy(), col_slot.astype(np.int32),
                    col_flow.astype(np.int32), col_deg.astype(np.int32))
        plan = np.rint(self.dense_plan() * self.units)
        if not (np.all(plan.sum(1) == self.p) and np.all(plan.sum(0) == self.q)):
            raise ValueError("plan does not ship p units per row and q per column")
        f = self.flow
        reduced = cost[idx].astype(np.float64) - f.u[:, None] - f.v[None, :]
        if reduced.min() < -1e-9 or np.abs(reduced[plan > 0]).max() > 1e-9:
            raise ValueError("duals are not optimal for the plan")
        return self

    def _setup(self, idx: np.ndarray, u: np.ndarray, v: np.ndarray, col_slot: np.ndarray,
               col_flow: np.ndarray, col_deg: np.ndarray) -> None:
        cost = self.cost
        nv = cost.shape[1]
        self.slot_of = {int(t): s for s, t in enumerate(idx)}
        self.flow = _Flow(idx.copy(), u.astype(np.float64), v.astype(np.float64), col_slot,
                          col_flow, col_deg, 0.0)
        self.flow.poo = _plan_cost(cost, self.flow.row_id, self.flow.col_slot,
                                   self.flow.col_flow, self.flow.col_deg) / self.units
        self._trial: tuple[int, int, _Flow] | None = None
        self.n_solves = 0
        # [shortest paths, rows scanned, columns settled, early stops, index rebuilds, edges]
        self.stats = np.zeros(6, dtype=np.int64)
        # Each coreset row's columns sorted by C_rj - v_j at a snapshot of v. Columns whose v
        # has since risen ("dirty") are relaxed one by one; for the rest the sorted keys bound
        # the reduced costs from below, so a search scans a row only as far as it can matter.
        self.max_dirty = max(16, nv // 64)
        self._rebuild_index(full=True)

    def _rebuild_index(self, full: bool = False) -> None:
        f = self.flow
        self.v_snap = f.v.copy()
        if full:
            n, nv = f.row_id.shape[0], f.v.shape[0]
            self.order = np.empty((n, nv), dtype=np.int32)
            self.keys = np.empty((n, nv), dtype=np.float64)
            _sort_rows(self.cost, f.row_id, self.v_snap, self.order, self.keys,
                       np.arange(n, dtype=np.int64))
        else:
            _resort_rows(self.cost, f.row_id, self.v_snap, self.order, self.keys)
            self.stats[4] += 1
        self.dirty = np.empty(0, dtype=np.int64)

    @property
    def poo(self) -> float:
        return self.flow.poo

    @property
    def indices(self) -> np.ndarray:
        return self.flow.row_id

    def row_duals(self) -> np.ndarray:
        """Dual variable x*_i of each coreset slot (aligned with ``indices``)."""
        return self.flow.u

    def try_swap(self, out_row: int, in_row: int, threshold: float | None = None) -> float:
        """Exact POO after replacing training row ``out_row`` (in S) by ``in_row`` (not in S).

        With ``threshold``, a swap proven unable to get below it is abandoned early and
        reported as ``inf`` (nothing to commit).
        """
        slot = self.slot_of[out_row]
        f = self.flow.copy()
        give_up = np.inf if threshold is None else threshold * self.units
        self.n_solves += 1
        if not _swap_reoptimise(self.cost, f.row_id, f.u, f.v, f.col_slot, f.col_flow,
                                f.col_deg, slot, in_row, self.p, give_up, self.stats,
                                self.order, self.keys, self.dirty):
            self._trial = None
            return np.inf
        f.poo = _plan_cost(self.cost, f.row_id, f.col_slot, f.col_flow, f.col_deg) / self.units
        self._trial = (out_row, in_row, f)
        return f.poo

    def commit(self) -> None:
        """Adopt the last trial swap."""
        assert self._trial is not None
        out_row, in_row, f = self._trial
        slot = self.slot_of.pop(out_row)
        self.slot_of[in_row] = slot
        self.flow = f
        self._trial = None
        self.dirty = np.flatnonzero(f.v > self.v_snap)
        if self.dirty.shape[0] > self.max_dirty:
            self._rebuild_index()
        else:
            _sort_rows(self.cost, f.row_id, self.v_snap, self.order, self.keys,
                       np.array([slot], dtype=np.int64))

    def dense_plan(self) -> np.ndarray:
        """The current plan as an (n, V) array of masses (for checks)."""
        f = self.flow
        plan = np.zeros((f.row_id.shape[0], f.v.shape[0]))
        for j in range(f.v.shape[0]):
            for k in range(f.col_deg[j]):
                plan[f.col_slot[j, k], j] += f.col_flow[j, k] / self.units
        return plan


@numba.njit(parallel=True, cache=True)
def _sort_rows(cost, row_id, v_snap, order, keys, slots):
    for t in numba.prange(slots.shape[0]):
        s = slots[t]
        r = row_id[s]
        key = np.empty(v_snap.shape[0])
        for j in range(v_snap.shape[0]):
            key[j] = np.float64(cost[r, j]) - v_snap[j]
        o = np.argsort(key, kind="mergesort")
        for k in range(o.shape[0]):
            order[s, k] = o[k]
            keys[s, k] = key[o[k]]


@numba.njit(parallel=True, cache=True)
def _resort_rows(cost, row_id, v_snap, order, keys):
    """Re-key every row for a new snapshot; the old order is nearly sorted: insertion sort."""
    nv = v_snap.shape[0]
    for s in numba.prange(row_id.shape[0]):
        r = row_id[s]
        for k in range(nv):
            keys[s, k] = np.float64(cost[r, order[s, k]]) - v_snap[order[s, k]]
        for k in range(1, nv):
            kk = keys[s, k]
            jj = order[s, k]
            m = k
            while m > 0 and keys[s, m - 1] > kk:
                keys[s, m] = keys[s, m - 1]
                order[s, m] = order[s, m - 1]
                m -= 1
            keys[s, m] = kk
            order[s, m] = jj


@numba.njit(cache=True)
def _plan_cost(cost, row_id, col_slot, col_flow, col_deg):
    total = 0.0
    for j in range(col_deg.shape[0]):
        for k in range(col_deg[j]):
            total += col_flow[j, k] * np.float64(cost[row_id[col_slot[j, k]], j])
    return total


@numba.njit(cache=True)
def _col_add(col_slot, col_flow, col_deg, j, r, delta):
    """Change the flow of slot r into column j by delta (entries with zero flow are dropped)."""
    d = col_deg[j]
    for k in range(d):
        if col_slot[j, k] == r:
            nf = col_flow[j, k] + delta
            if nf == 0:
                col_slot[j, k] = col_slot[j, d - 1]
                col_flow[j, k] = col_flow[j, d - 1]
                col_slot[j, d - 1] = -1
                col_flow[j, d - 1] = 0
                col_deg[j] = d - 1
            else:
                col_flow[j, k] = nf
            return
    col_slot[j, d] = r
    col_flow[j, d] = delta
    col_deg[j] = d + 1


@numba.njit(cache=True)
def _col_get(col_slot, col_flow, col_deg, j, r):
    for k in range(col_deg[j]):
        if col_slot[j, k] == r:
            return col_flow[j, k]
    return 0


@numba.njit(cache=True)
def _push_path(col_slot, col_flow, col_deg, pred_col, pred_row, slot, target, delta):
    """Send up to ``delta`` units from row ``slot`` to column ``target`` along a shortest-path
    tree (``pred_col[j]``: the row that reached column j; ``pred_row[r]``: the column that
    reached row r), as many as the flows the path cancels allow; returns the units sent."""
    j = target
    while True:
        r = pred_col[j]
        if r == slot:
            break
        jb = pred_row[r]
        delta = min(delta, _col_get(col_slot, col_flow, col_deg, jb, r))
        j = jb
    j = target
    while True:
        r = pred_col[j]
        if r == slot:
            _col_add(col_slot, col_flow, col_deg, j, r, delta)
            break
        jb = pred_row[r]
        _col_add(col_slot, col_flow, col_deg, jb, r, -delta)
        _col_add(col_slot, col_flow, col_deg, j, r, delta)
        j = jb
    return delta


@numba.njit(cache=True)
def _sift_up(heap, pos, key, i):
    """Indexed binary min-heap of column ids keyed by ``key`` (ties: smaller id first)."""
    x = heap[i]
    kx = key[x]
    while i > 0:
        parent = (i - 1) >> 1
        y = heap[parent]
        ky = key[y]
        if ky < kx or (ky == kx and y < x):
            break
        heap[i] = y
        pos[y] = i
        i = parent
    heap[i] = x
    pos[x] = i


@numba.njit(cache=True)
def _sift_down(heap, pos, key, size, i):
    x = heap[i]
    kx = key[x]
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        y = heap[c]
        ky = key[y]
        if c + 1 < size:
            z = heap[c + 1]
            kz = key[z]
            if kz < ky or (kz == ky and z < y):
                c += 1
                y = z
                ky = kz
        if kx < ky or (kx == ky and x < y):
            break
        heap[i] = y
        pos[y] = i
        i = c
    heap[i] = x
    pos[x] = i


@numba.njit(cache=True)
def _heap_update(heap, pos, key, size, j):
    """Insert column j, or move it up after its key fell; returns the new size."""
    if pos[j] < 0:
        heap[size] = j
        pos[j] = size
        _sift_up(heap, pos, key, size)
        return size + 1
    _sift_up(heap, pos, key, pos[j])
    return size


@numba.njit(cache=True)
def _heap_pop(heap, pos, key, size):
    j = heap[0]
    pos[j] = -1
    size -= 1
    if size > 0:
        heap[0] = heap[size]
        pos[heap[0]] = 0
        _sift_down(heap, pos, key, size, 0)
    return j, size


@numba.njit(cache=True)
def _swap_reoptimise(cost, row_id, u, v, col_slot, col_flow, col_deg, slot, new_row, p,
                     give_up_at, stats, order, keys, dirty):
    """Replace the row of ``slot`` by ``new_row`` and restore optimality in place.

    Potentials: a row's is -u, a column's is v, so the reduced cost of shipping r -> j is
    cost[r, j] - u[r] - v[j] >= 0, zero wherever flow runs (complementary slackness).

    The potentials stay dual feasible throughout, so their objective p sum(u) + q sum(v) is a
    lower bound on the new optimum (weak duality) that rises with every path; once it reaches
    ``give_up_at`` (total cost, in units) the exchange cannot win and the search stops early:
    returns False, state left partial.
    ``stats`` accumulates [paths, rows scanned, columns settled, early stops].

    ``order``/``keys`` sort each slot's columns by C_rj - v_j at a snapshot of v; columns in
    ``dirty`` (v above its snapshot) and the columns losing supply here are relaxed one by one.
    For the others, d_r + key - u_r bounds the distance an edge gives from below, so a row is
    scanned in key order only while that bound can still beat the best distance found to a
    column short of supply: exact, no node the search must settle is missed.
    """
    n = row_id.shape[0]
    nv = v.shape[0]
    deficit = np.zeros(nv, dtype=np.int64)
    for j in range(nv):
        f = _col_get(col_slot, col_flow, col_deg, j, slot)
        if f > 0:
            deficit[j] = f
            _col_add(col_slot, col_flow, col_deg, j, slot, -f)
    row_id[slot] = new_row
    # A column without supply may take the highest potential that keeps its reduced costs
    # >= 0 (its c-transform): the search then reaches it sooner, settling fewer nodes.
    for j in range(nv):
        if deficit[j] > 0:
            lo = np.inf
            for r in range(n):
                if r != slot:
                    val = np.float64(cost[row_id[r], j]) - u[r]
                    if val < lo:
                        lo = val
            v[j] = lo
    best = np.inf
    for j in range(nv):
        val = np.float64(cost[new_row, j]) - v[j]
        if val < best:
            best = val
    # Weak duality: the kept duals with u[slot] = min_j (C_oj - v_j) are feasible for the new
    # problem, so their objective bounds its optimum from below. It rises with every path.
    dual = 0.0
    for r in range(n):
        dual += u[r]
    dual = p * (dual - u[slot] + best)
    q = col_slot.shape[1]  # units each column demands
    for j in range(nv):
        dual += q * v[j]
    u[slot] = best
    if dual >= give_up_at:
        stats[3] += 1
        return False
    n_def = 0
    for j in range(nv):
        if deficit[j] > 0:
            n_def += 1
    extra = np.empty(dirty.shape[0] + n_def, dtype=np.int64)
    extra[: dirty.shape[0]] = dirty
    t = dirty.shape[0]
    for j in range(nv):
        if deficit[j] > 0:
            extra[t] = j
            t += 1

    dist_row = np.empty(n)
    dist_col = np.empty(nv)
    pred_col = np.empty(nv, dtype=np.int64)
    pred_row = np.empty(n, dtype=np.int64)
    col_done = np.zeros(nv, dtype=np.bool_)
    row_done = np.zeros(n, dtype=np.bool_)
    rows_seen = np.empty(n, dtype=np.int64)
    cols_seen = np.empty(nv, dtype=np.int64)
    stack = np.empty(n, dtype=np.int64)
    heap = np.empty(nv, dtype=np.int64)
    pos = np.full(nv, -1, dtype=np.int64)
    excess = p
    while excess > 0:
        dist_col[:] = np.inf
        n_rows = 0
        n_cols = 0
        size = 0
        ub = np.inf  # best distance found so far to a column short of supply
        row_done[slot] = True
        dist_row[slot] = 0.0
        stack[0] = slot
        n_stack = 1
        target = -1
        while target < 0:
            # scan the pending rows: relax the columns each could ship to
            while n_stack > 0:
                n_stack -= 1
                r = stack[n_stack]
                rows_seen[n_rows] = r
                n_rows += 1
                dr = dist_row[r]
                cr = row_id[r]
                ur = u[r]
                if r == slot:
                    # the incoming row has no index entry yet: relax all its columns
                    for jj in range(nv):
                        nd = dr + (np.float64(cost[cr, jj]) - ur - v[jj])
                        if nd < dist_col[jj] and not col_done[jj]:
                            dist_col[jj] = nd
                            pred_col[jj] = r
                            size = _heap_update(heap, pos, dist_col, size, jj)
                            if deficit[jj] > 0 and nd < ub:
                                ub = nd
                    continue
                for t in range(extra.shape[0]):
                    jj = extra[t]
                    nd = dr + (np.float64(cost[cr, jj]) - ur - v[jj])
                    if nd < dist_col[jj] and not col_done[jj]:
                        dist_col[jj] = nd
                        pred_col[jj] = r
                        size = _heap_update(heap, pos, dist_col, size, jj)
                        if deficit[jj] > 0 and nd < ub:
                            ub = nd
                lim = ub - dr + ur + 1e-12
                for k in range(nv):
                    if keys[r, k] >= lim:
                        stats[5] += k
                        break
                    jj = order[r, k]
                    nd = dr + (np.float64(cost[cr, jj]) - ur - v[jj])
                    if nd < dist_col[jj] and not col_done[jj]:
                        dist_col[jj] = nd
                        pred_col[jj] = r
                        size = _heap_update(heap, pos, dist_col, size, jj)
                        if deficit[jj] > 0 and nd < ub:
                            ub = nd
                            lim = ub - dr + ur + 1e-12
            # (the three relaxation loops above are written out in full: this is the hot path,
            # and a shared helper returning a tuple measured four times slower)
            if size == 0:
                break
            j, size = _heap_pop(heap, pos, dist_col, size)
            dj = dist_col[j]
            col_done[j] = True
            cols_seen[n_cols] = j
            n_cols += 1
            if deficit[j] > 0:
                target = j
                break
            # the rows shipping to j are reached through tight residual edges, at no cost
            for k in range(col_deg[j]):
                rr = col_slot[j, k]
                if not row_done[rr]:
                    row_done[rr] = True
                    dist_row[rr] = dj
                    pred_row[rr] = j
                    stack[n_stack] = rr
                    n_stack += 1
        for t in range(size):
            pos[heap[t]] = -1
        if target < 0:
            raise RuntimeError("no augmenting path: inconsistent transport state")
        big_d = dist_col[target]
        stats[0] += 1
        stats[1] += n_rows
        stats[2] += n_cols
        delta = min(excess, deficit[target])
        delta = _push_path(col_slot, col_flow, col_deg, pred_col, pred_row, slot, target,
                           delta)
        deficit[target] -= delta
        excess -= delta
        for t in range(n_rows):
            rr = rows_seen[t]
            u[rr] += big_d - dist_row[rr]
            dual += p * (big_d - dist_row[rr])
            row_done[rr] = False
        for t in range(n_cols):
            jj = cols_seen[t]
            v[jj] -= big_d - dist_col[jj]
            dual -= q * (big_d - dist_col[jj])
            col_done[jj] = False
        if excess > 0 and dual >= give_up_at:
            stats[3] += 1
            return False
    return True
