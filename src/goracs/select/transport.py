"""Exact re-optimisation of POO after an exchange (method.md sections 3 and 4).

POO(S) = OT_C(mu_S, mu_V) with uniform marginals 1/|S| and 1/V. Scaled by T = |S| V / g
(g = gcd(|S|, V)) it is an integer transportation problem: each coreset row supplies
p = V / g units, each validation column demands q = |S| / g units, and an optimal vertex has
integer flows. That makes an exchange cheap to re-optimise exactly: removing row i frees its p
units on a few columns; the incoming row o must ship p units; successive shortest paths on the
residual graph, with the current optimal duals as potentials (reduced costs stay >= 0), move
them at minimum cost. Each path is a Dijkstra search that usually stops after a handful of
rows, instead of a network-simplex solve from scratch.

:class:`TransportState` holds the plan and its duals; the compiled searches are in
:mod:`goracs.select._kernels`, the first solve is :func:`goracs.select.ot.exact_ot`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from goracs.select._kernels import (
    _plan_cost,
    _resort_rows,
    _sort_rows,
    _swap_reoptimise,
)
from goracs.select.ot import exact_ot


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
