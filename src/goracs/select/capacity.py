"""Greedy past saturation: continue the initialisation on a capacitated transport.

The relaxed objective G lets one coreset sample serve any number of validation samples. When a
few training samples are the cheapest option for every validation sample (a large lambda makes
samples with large gradient norms cheap everywhere), G reaches its minimum over the whole pool
after those few picks: every remaining candidate then gains exactly zero, and a plain greedy
can only take candidates in index order (in a time-ordered pool, the oldest samples).

POO gives every coreset sample the same share, 1/n, of the mass. Scaled to integers as in
:mod:`goracs.select.transport` (p = V/g units per coreset row, q = n/g per validation column,
g = gcd(n, V)), the picks made so far define the partial transport

    PT(S) = min sum_ij C_ij x_ij   s.t.  sum_j x_ij = p  (i in S),   sum_i x_ij <= q  (all j),

each pick shipped at the capacity it will have in the final coreset into whatever validation
room is left. At |S| = n every column is full and PT(S) / (n p) is POO(S) itself. Its optimal
duals are row prices u and column prices v <= 0, with v_j = 0 while column j still has room;
-v_j is what it costs, at the margin, to displace the samples already served in column j.

After saturation each further sample is the outside candidate e of least *fill cost*

    phi_e = q * (r_(1) + ... + r_(m-1)) + (p - q (m - 1)) * r_(m),   r_ej = C_ej - v_j,

(r_(k) the k-th smallest, m = ceil(p / q) = ceil(V / n)): the cost of shipping e's p units to
its cheapest columns at current prices, at most q units to a column. phi_e is the most the
current duals can certify (weak duality) about the rise PT(S + e) - PT(S), and equals it when
e's cheapest columns have room for those units. It is the marginal impact of adding e
(method.md, Theorem 4.3, R = ceil(V/n)): a candidate takes only its capacity's worth of
validation points, so a point whose current server is over capacity still rewards a new
nearby pick. The chosen
sample is then added to the transport exactly: successive shortest paths from the new row to
columns with room, with the duals as potentials, keep the plan and the prices optimal.

Column prices only fall as rows are added (a settled column's v drops, a column with room
keeps v = 0), so every r_ej and every phi_e only rises, also in floating point: a fill cost
computed earlier bounds the current one from below, and lazy evaluation picks exactly what
recomputing every fill cost at every step would, ties going to the smaller index.
"""

from __future__ import annotations

import heapq
import math

import numba
import numpy as np

from goracs.select._kernels import _heap_pop, _heap_update, _push_path
from goracs.select.transport import TransportState

# A row is sorted again at current prices once its scans have visited RESORT_VISITS * V
# columns since its last sort (about what a sort costs).
RESORT_VISITS = 1


@numba.njit(cache=True)
def _add_row(cost, row_id, u, v, col_slot, col_flow, col_deg, room, slot, new_row, p, order,
             keys, visits, stats):
    """Put training row ``new_row`` into ``slot`` and ship its p units, keeping optimality.

    Slots ``0..slot-1`` are the rows already shipped. Reduced costs C_rj - u_r - v_j stay >= 0
    and vanish on the plan. Each unit travels a shortest path (Dijkstra on reduced costs) from
    the new row to a column with room, through columns already full and back along the rows
    serving them; potentials of the nodes settled before the path's end move by the distance
    left, so columns with room keep v = 0 and no column's v ever rises.

    ``order``/``keys`` hold each slot's columns sorted by C_rj - v_j at some earlier v: lower
    bounds of the current values, so a row is scanned in key order only while a column can
    still beat the best distance found to a column with room. ``visits`` counts the columns
    each row's scans have visited since its sort. ``stats`` accumulates [paths, rows scanned,
    -, columns visited, rows sorted again].
    """
    nv = v.shape[0]
    n = slot + 1
    row_id[slot] = new_row
    best = np.inf
    for j in range(nv):
        val = np.float64(cost[new_row, j]) - v[j]
        if val < best:
            best = val
    u[slot] = best
    dist_row = np.empty(n)
    dist_col = np.full(nv, np.inf)
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
        n_rows = 0
        n_cols = 0
        size = 0
        ub = np.inf  # shortest distance found so far to a column with room
        row_done[slot] = True
        dist_row[slot] = 0.0
        stack[0] = slot
        n_stack = 1
        target = -1
        while target < 0:
            while n_stack > 0:
                n_stack -= 1
                r = stack[n_stack]
                rows_seen[n_rows] = r
                n_rows += 1
                dr = dist_row[r]
                cr = row_id[r]
                ur = u[r]
                if r == slot:
                    # the new row: its cheapest column with room bounds the path; only the
                    # columns below that bound can lie on a shorter one
                    for j in range(nv):
                        if room[j] > 0:
                            nd = dr + (np.float64(cost[cr, j]) - ur - v[j])
                            if nd < ub:
                                ub = nd
                    lim = ub + 1e-12
                    for j in range(nv):
                        if col_done[j]:
                            continue
                        nd = dr + (np.float64(cost[cr, j]) - ur - v[j])
                        if nd < lim and nd < dist_col[j]:
                            dist_col[j] = nd
                            pred_col[j] = r
                            size = _heap_update(heap, pos, dist_col, size, j)
                    continue
                # a row already in: its columns in order of their key at sorting time, a lower
                # bound of C_rj - v_j (v only falls); past ``lim`` no column can beat ``ub``
                lim = ub - dr + ur + 1e-12
                k = 0
                while k < nv and keys[r, k] < lim:
                    j = order[r, k]
                    k += 1
                    if col_done[j]:
                        continue
                    nd = dr + (np.float64(cost[cr, j]) - ur - v[j])
                    if nd < dist_col[j] and nd < ub + 1e-12:
                        dist_col[j] = nd
                        pred_col[j] = r
                        size = _heap_update(heap, pos, dist_col, size, j)
                        if room[j] > 0 and nd < ub:
                            ub = nd
                            lim = ub - dr + ur + 1e-12
                stats[3] += k
                visits[r] += k
                if visits[r] > RESORT_VISITS * nv:
                    # prices have fallen since this row was sorted, and its loose keys have
                    # cost more visits than sorting it again at the current prices does
                    _sort_row(cost, cr, v, order[r], keys[r])
                    visits[r] = 0
                    stats[4] += 1
            if size == 0:
                break
            j, size = _heap_pop(heap, pos, dist_col, size)
            col_done[j] = True
            cols_seen[n_cols] = j
            n_cols += 1
            if room[j] > 0:
                target = j
                break
            dj = dist_col[j]
            # the rows shipping to a full column are reached through tight reverse edges
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
            raise RuntimeError("no augmenting path: the columns have no room left")
        big_d = dist_col[target]
        stats[0] += 1
        stats[1] += n_rows
        delta = min(excess, room[target])
        delta = _push_path(col_slot, col_flow, col_deg, pred_col, pred_row, slot, target,
                           delta)
        room[target] -= delta
        excess -= delta
        for t in range(n_rows):
            rr = rows_seen[t]
            u[rr] += big_d - dist_row[rr]
            row_done[rr] = False
        for t in range(n_cols):
            jj = cols_seen[t]
            v[jj] -= big_d - dist_col[jj]
            col_done[jj] = False
        dist_col[:] = np.inf
    _sort_row(cost, new_row, v, order[slot], keys[slot])
    visits[slot] = 0


@numba.njit(cache=True)
def _sort_row(cost, row, v, order, keys):
    """``order``: the columns by C_rj - v_j, ascending; ``keys``: those values."""
    key = np.empty(v.shape[0])
    for j in range(v.shape[0]):
        key[j] = np.float64(cost[row, j]) - v[j]
    o = np.argsort(key, kind="mergesort")
    for k in range(o.shape[0]):
        order[k] = o[k]
        keys[k] = key[o[k]]


@numba.njit(cache=True)
def _fill_cost(cost, row, v, p, q, m):
    """phi for one training row: p units to its cheapest columns at prices v, <= q per column."""
    nv = v.shape[0]
    if m <= 32:  # keep the m smallest in a sorted buffer
        low = np.full(m, np.inf)
        for j in range(nv):
            x = np.float64(cost[row, j]) - v[j]
            if x < low[m - 1]:
                k = m - 1
                while k > 0 and low[k - 1] > x:
                    low[k] = low[k - 1]
                    k -= 1
                low[k] = x
    else:
        r = np.empty(nv)
        for j in range(nv):
            r[j] = np.float64(cost[row, j]) - v[j]
        low = np.sort(np.partition(r, m - 1)[:m])
    acc = 0.0
    for k in range(m - 1):
        acc += low[k]
    return q * acc + (p - q * (m - 1)) * low[m - 1]


@numba.njit(parallel=True, cache=True)
def _fill_costs(cost, rows, v, p, q, m):
    out = np.empty(rows.shape[0])
    for t in numba.prange(rows.shape[0]):
        out[t] = _fill_cost(cost, rows[t], v, p, q, m)
    return out


@numba.njit(cache=True)
def _lazy_fill(cost, row_id, u, v, col_slot, col_flow, col_deg, room, k0, n, p, q, m, phi,
               order, keys, visits, stats):
    """Slots k0..n-1: each time the outside row of least fill cost, added exactly.

    ``phi`` holds every training row's fill cost at the k0-slot state (inf inside S).
    """
    n_rows = cost.shape[0]
    stamp = np.full(n_rows, k0, dtype=np.int64)  # slot count at which each key was computed
    heap = [(phi[e], np.int64(e)) for e in range(n_rows) if not np.isinf(phi[e])]
    heapq.heapify(heap)
    k = k0
    while k < n:
        key, e = heapq.heappop(heap)
        if stamp[e] != k:
            stamp[e] = k
            stats[2] += 1
            heapq.heappush(heap, (_fill_cost(cost, e, v, p, q, m), e))
            continue
        _add_row(cost, row_id, u, v, col_slot, col_flow, col_deg, room, k, e, p, order, keys,
                 visits, stats)
        k += 1
    return k


class PartialTransport:
    """The partial transport PT(S) of the module docstring, grown one row at a time.

    Parameters
    ----------
    cost : (N, V) cost matrix (float32 or float64), rows are training samples.
    n : the final coreset size, which fixes each row's capacity p = V/g and each column's
        q = n/g (g = gcd(n, V)).

    Rows are added with :meth:`add`; after each addition the integer plan (stored by column
    as in :class:`~goracs.select.transport.TransportState`) and the duals ``u``, ``v`` are
    optimal.
    """

    def __init__(self, cost: np.ndarray, n: int) -> None:
        n_rows, nv = cost.shape
        if not 1 <= n <= n_rows:
            raise ValueError(f"coreset size must be in [1, {n_rows}], got {n}")
        g = math.gcd(n, nv)
        self.cost = cost
        self.n = n
        self.p, self.q = nv // g, n // g
        self.m = -(-self.p // self.q)  # ceil(p / q) = ceil(V / n)
        self.row_id = np.full(n, -1, dtype=np.int64)
        self.u = np.zeros(n)
        self.v = np.zeros(nv)
        self.col_slot = np.full((nv, self.q), -1, dtype=np.int32)
        self.col_flow = np.zeros((nv, self.q), dtype=np.int32)
        self.col_deg = np.zeros(nv, dtype=np.int32)
        self.room = np.full(nv, self.q, dtype=np.int64)
        # each row's columns by C_rj - v_j at its last sort: lower bounds ever after
        self.order = np.empty((n, nv), dtype=np.int32)
        self.keys = np.empty((n, nv))
        self.visits = np.zeros(n, dtype=np.int64)  # columns visited since each row's sort
        self.size = 0
        # [shortest paths, rows scanned, fill costs recomputed, columns visited, re-sorts]
        self.stats = np.zeros(5, dtype=np.int64)

    @property
    def indices(self) -> np.ndarray:
        """Training rows shipped so far, in the order they were added."""
        return self.row_id[: self.size].copy()

    def add(self, row: int) -> None:
        """Add training row ``row`` (not yet in) and re-optimise the plan exactly."""
        if self.size >= self.n:
            raise ValueError(f"all {self.n} rows are in already")
        if row in set(self.row_id[: self.size].tolist()):
            raise ValueError(f"row {row} is in already")
        _add_row(self.cost, self.row_id, self.u, self.v, self.col_slot, self.col_flow,
                 self.col_deg, self.room, self.size, int(row), self.p, self.order, self.keys,
                 self.visits, self.stats)
        self.size += 1

    def fill_costs(self, rows: np.ndarray | None = None) -> np.ndarray:
        """phi (in units) of each of ``rows`` (default: every training row) at current prices."""
        which = (np.arange(self.cost.shape[0]) if rows is None
                 else np.asarray(rows, dtype=np.int64))
        return _fill_costs(self.cost, which, self.v, self.p, self.q, self.m)

    def state(self) -> TransportState:
        """The exact POO state of the n rows, from this plan and its duals (no new solve)."""
        if self.size != self.n:
            raise ValueError(f"{self.size} of {self.n} rows shipped: the transport is partial")
        return TransportState.from_plan(self.cost, self.indices, self.u, self.v, self.col_slot,
                                        self.col_flow, self.col_deg)

    def value(self) -> float:
        """PT(S) in mass units: the plan's cost divided by n p (POO(S) once ``size == n``)."""
        total = 0.0
        for j in range(self.col_deg.shape[0]):
            for k in range(int(self.col_deg[j])):
                r = self.row_id[self.col_slot[j, k]]
                total += float(self.col_flow[j, k]) * float(self.cost[r, j])
        return total / (self.n * self.p)

    def dense_plan(self) -> np.ndarray:
        """The plan as a (size, V) array of integer units (for checks)."""
        plan = np.zeros((self.size, self.v.shape[0]), dtype=np.int64)
        for j in range(self.v.shape[0]):
            for k in range(int(self.col_deg[j])):
                plan[self.col_slot[j, k], j] += self.col_flow[j, k]
        return plan


def capacity_fill(cost: np.ndarray, start: np.ndarray, n: int) -> tuple[np.ndarray,
                                                                          PartialTransport]:
    """Extend the picks ``start`` to ``n`` rows by least fill cost (the module docstring).

    Returns the ``n`` rows in pick order (``start`` first) and the final transport, whose plan
    and duals are optimal for POO of those rows.
    """
    start = np.asarray(start, dtype=np.int64)
    if start.shape[0] == 0 or start.shape[0] > n:
        raise ValueError(f"need between 1 and {n} starting rows, got {start.shape[0]}")
    pt = PartialTransport(cost, n)
    for row in start.tolist():
        pt.add(row)
    if pt.size < n:
        phi = pt.fill_costs()
        phi[start] = np.inf
        pt.size = _lazy_fill(cost, pt.row_id, pt.u, pt.v, pt.col_slot, pt.col_flow,
                             pt.col_deg, pt.room, pt.size, n, pt.p, pt.q, pt.m, phi, pt.order,
                             pt.keys, pt.visits, pt.stats)
    return pt.indices, pt
