"""Compiled kernels of the exact transport: the integer plan stored by column, shortest paths
on its residual graph, and the indexed heap those searches use.

They work on plain arrays, with the layout :class:`~goracs.select.transport.TransportState`
keeps (method.md section 3: every coreset row ships p = V/g units, every validation column
takes q = n/g, g = gcd(n, V)): slot ``col_slot[j, k]`` ships ``col_flow[j, k]`` units to
column j, ``col_deg[j]`` entries in use. :mod:`goracs.select.transport` re-optimises a swap
with them (method.md section 4, refinement by exchange) and :mod:`goracs.select.capacity`
grows the capacitated transport past saturation with the same path and heap kernels.

Every kernel is ``numba.njit``-compiled and cached on disk; none is meant to be called from
outside the selection package.
"""

from __future__ import annotations

import numba
import numpy as np


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
            # and a shared helper returning a tuple is several times slower here)
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
