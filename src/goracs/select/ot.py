"""Exact optimal transport between uniform marginals, through POT (method.md section 3).

:func:`exact_ot` solves the transport of a cost matrix with POT's network simplex and returns
its value, plan and duals; :func:`poo_value` is POO(S) for rows of the full cost matrix. The
plan kept optimal through exchanges is :class:`goracs.select.transport.TransportState`.
"""

from __future__ import annotations

import os
import sys

import numpy as np


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
