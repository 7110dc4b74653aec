"""ITRA stage 2: refinement by exchange, every swap verified exactly (method.md section 4).

Each round scores all samples by marginal impact under the current duals, takes the c coreset
samples whose removal promises most and the c outside samples whose addition promises most,
and tries the c*c swaps in order of promise, each by exact re-optimisation of the transport
plan (:class:`~goracs.select.transport.TransportState`). A swap that lowers POO is accepted at
once. With ``swaps_per_round=1`` a round ends at its first accepted swap (the reference's loop);
by default it goes on down the list, skipping pairs whose samples already moved, so the
marginal impacts, one pass over the cost matrix, are recomputed far less often than swaps are
accepted. Refinement stops after ``max_iters`` accepted swaps, when a whole round improves
nothing, when a round improves POO by less than a relative ``tol``, or after ``patience``
failed evaluations in a row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from goracs.select.marginal import marginal_impact
from goracs.select.transport import TransportState

# A swap must lower POO by more than this to count: guards against accepting rounding noise.
_TOL = 1e-12


@dataclass
class RefineResult:
    indices: np.ndarray
    poo: float
    trace: list[float]  # POO at the start and after each accepted swap
    trace_seconds: list[float]  # seconds since refinement began, aligned with ``trace``
    n_accepted: int
    n_trials: int  # exact swap evaluations
    n_rounds: int  # marginal-impact computations
    pass_at_1: float | None  # share of iterations whose first candidate swap improved
    stats: dict[str, float] = field(default_factory=dict)


def _top(values: np.ndarray, rows: np.ndarray, c: int, largest: bool) -> np.ndarray:
    """The ``c`` rows with the largest (or smallest) values, ties to the smaller index."""
    key = -values if largest else values
    order = np.lexsort((rows, key))
    return rows[order[:c]]


def refine(
    cost: np.ndarray,
    indices: np.ndarray,
    candidates: int = 30,
    max_iters: int | None = 100,
    swaps_per_round: int | None = None,
    time_limit: float | None = None,
    tol: float = 0.0,
    patience: int | None = None,
    state: TransportState | None = None,
    impacts: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> RefineResult:
    """Lower POO(S) by exchanges; ``max_iters=None`` runs until no candidate improves.

    A round that lowers POO by less than ``tol`` times its value ends refinement (0: only a
    round with no improving swap does), and so do ``patience`` exact evaluations in a row
    that all fail (None: no such limit).

    ``impacts(indices, duals)``, when given, returns the marginal impact of every training
    row in place of :func:`~goracs.select.marginal.marginal_impact` on ``cost``; the
    streaming engine passes its blockwise one, with ``cost`` anything that has the matrix's
    ``shape`` and ``state`` a state in pool indices.
    """
    t0 = time.perf_counter()
    if state is None:
        state = TransportState(cost, indices)
    n_rows = cost.shape[0]
    trace = [state.poo]
    trace_s = [time.perf_counter() - t0]
    accepted = trials = rounds = iterations = first_hits = failures_in_a_row = 0
    mi_seconds = 0.0
    if len(indices) < 2 or len(indices) >= n_rows:
        return RefineResult(np.sort(state.indices), state.poo, trace, trace_s, 0, 0, 0, None)
    in_s = np.zeros(n_rows, dtype=bool)
    in_s[state.indices] = True
    done = False
    while not done and (max_iters is None or accepted < max_iters):
        t_mi = time.perf_counter()
        impact = (marginal_impact(cost, state.indices, state.row_duals()) if impacts is None
                  else impacts(state.indices, state.row_duals()))
        mi_seconds += time.perf_counter() - t_mi
        rounds += 1
        inside = np.flatnonzero(in_s)
        outside = np.flatnonzero(~in_s)
        c_in = _top(impact[inside], inside, candidates, largest=True)
        c_out = _top(impact[outside], outside, candidates, largest=False)
        # pairs in order of promise: biggest drop F_in - F_out first
        promise = impact[c_in][:, None] - impact[c_out][None, :]
        order = np.lexsort((np.tile(np.arange(len(c_out)), len(c_in)),
                            np.repeat(np.arange(len(c_in)), len(c_out)), -promise.ravel()))
        round_accepts = 0
        round_start = state.poo
        first_of_iteration = True
        for flat in order:
            i = int(c_in[flat // len(c_out)])
            o = int(c_out[flat % len(c_out)])
            if not in_s[i] or in_s[o]:
                continue
            if first_of_iteration:
                iterations += 1
            trials += 1
            new = state.try_swap(i, o, threshold=state.poo - _TOL)
            if new < state.poo - _TOL:
                failures_in_a_row = 0
                if first_of_iteration:
                    first_hits += 1
                state.commit()
                in_s[i] = False
                in_s[o] = True
                accepted += 1
                round_accepts += 1
                trace.append(new)
                trace_s.append(time.perf_counter() - t0)
                first_of_iteration = True
                if max_iters is not None and accepted >= max_iters:
                    break
                if swaps_per_round is not None and round_accepts >= swaps_per_round:
                    break
            else:
                first_of_iteration = False
                failures_in_a_row += 1
                if patience is not None and failures_in_a_row >= patience:
                    done = True
                    break
            if time_limit is not None and time.perf_counter() - t0 > time_limit:
                done = True
                break
        if round_accepts == 0 or round_start - state.poo < tol * round_start:
            done = True
    return RefineResult(
        indices=np.sort(state.indices),
        poo=state.poo,
        trace=trace,
        trace_seconds=trace_s,
        n_accepted=accepted,
        n_trials=trials,
        n_rounds=rounds,
        pass_at_1=(first_hits / iterations) if iterations else None,
        stats={"impact_s": mi_seconds, "paths": int(state.stats[0]),
               "rows_scanned": int(state.stats[1]), "cols_settled": int(state.stats[2]),
               "early_stops": int(state.stats[3])},
    )
