"""Paired comparison of two methods over the same test users, by a bootstrap over users.

Each method is an *arm*: one or more runs (seeds) scored on the same test samples. The figure
compared is the arm's mean metric over its runs; the difference B - A is judged by resampling
test **users** with replacement (every sample of a drawn user comes along, so samples of one
person stay together) and recomputing every run's metric on the resampled set. Both arms see
the same draw in each replicate, so what the two share (hard users, easy users) cancels, as in
any paired test. With ``resample_runs`` each replicate also redraws the runs of each arm, so
the interval carries the seed-to-seed spread too (coarse with few seeds).

Metrics are read from prediction rows (``predictions.jsonl``): CTR ``AUC`` (recomputed on each
replicate), ``log_loss`` and ``accuracy``; SeqRec ``PROTO.NDCG@K`` / ``PROTO.HR@K`` from the
ranks of protocol ``sampled`` or ``full``. Pure functions of arrays and rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

from goracs.errors import GoracsError
from goracs.evaluate.metrics import per_sample_gain

#: Clipping of P(Yes) for the per-sample log-loss, as :func:`goracs.evaluate.metrics.log_loss`.
EPS = 1e-7


@dataclass(frozen=True)
class Difference:
    """B - A in mean metric with its bootstrap interval.

    ``a`` and ``b`` are the arms' means on the original samples, ``diff`` = b - a, ``lo`` and
    ``hi`` the percentile interval at ``level``; ``users`` and ``samples`` what was resampled;
    ``runs_a`` and ``runs_b`` the runs in each arm.
    """

    a: float
    b: float
    diff: float
    lo: float
    hi: float
    level: float
    users: int
    samples: int
    runs_a: int
    runs_b: int
    replicates: int

    def verdict(self, higher_is_better: bool = True) -> str:
        """``"better"``, ``"worse"`` or ``"tie"``: whether B beats A at this level."""
        if self.lo > 0:
            return "better" if higher_is_better else "worse"
        if self.hi < 0:
            return "worse" if higher_is_better else "better"
        return "tie"


def auc_rows(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUC of every row of ``scores`` (R, m) against the shared binary ``labels`` (m,), ties
    counted half (the Mann-Whitney form); NaN when a class is missing."""
    y = np.asarray(labels).astype(bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return np.full(scores.shape[0], np.nan)
    ranks = rankdata(scores, axis=1)
    return (ranks[:, y].sum(axis=1) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def metric_kind(task: str, metric: str) -> str:
    """``"auc"`` for CTR AUC (a statistic of the whole sample), ``"mean"`` for the metrics
    that are means of per-sample values."""
    if task == "ctr":
        if metric == "AUC":
            return "auc"
        if metric in ("log_loss", "accuracy"):
            return "mean"
    else:
        proto, _, name = metric.partition(".")
        if proto in ("sampled", "full") and name.split("@")[0] in ("NDCG", "HR"):
            return "mean"
    raise GoracsError(f"no paired comparison for {task} metric {metric!r}")


def per_sample_values(task: str, metric: str, rows: Sequence[Mapping[str, Any]]
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """What the metric is computed from, per prediction row: ``(values, labels)``.

    CTR AUC: P(Yes) and the labels; CTR log-loss and accuracy: each sample's loss or hit (no
    labels needed afterwards); SeqRec: each sample's NDCG or HR gain.
    """
    kind = metric_kind(task, metric)
    if task == "ctr":
        try:
            p = np.array([float(r["p_yes"]) for r in rows], dtype=np.float64)
            y = np.array([int(r["label"]) for r in rows], dtype=np.int64)
        except (KeyError, TypeError, ValueError):
            raise GoracsError("CTR predictions need p_yes and label on every row") from None
        if kind == "auc":
            return p, y
        if metric == "log_loss":
            q = np.clip(p, EPS, 1 - EPS)
            return -(y * np.log(q) + (1 - y) * np.log(1 - q)), None
        return ((p > 0.5).astype(np.int64) == y).astype(np.float64), None
    proto, _, name = metric.partition(".")
    measure, _, k = name.partition("@")
    key = f"rank_{proto}"
    if any(key not in r for r in rows):
        raise GoracsError(f"SeqRec predictions need {key} on every row for {metric}")
    return per_sample_gain([r[key] for r in rows], int(k), measure), None


def metric_value(task: str, metric: str, rows: Sequence[Mapping[str, Any]]) -> float:
    """The metric of one run's prediction rows."""
    values, labels = per_sample_values(task, metric, rows)
    if labels is not None:
        return float(auc_rows(values[None, :], labels)[0])
    return float(values.mean())


def align(arms: Sequence[Sequence[Sequence[Mapping[str, Any]]]]
          ) -> tuple[list[list[list[Mapping[str, Any]]]], list[Any], list[Any]]:
    """Put every run's rows in one order: the test indices all runs scored (each run must
    have scored the same ones). Returns the reordered rows and, per sample, its index and
    its user (the index itself when a row names no user)."""
    keyed = []
    common: set[int] | None = None
    for arm in arms:
        runs = []
        for rows in arm:
            by = {int(r["index"]): r for r in rows}
            if len(by) != len(rows):
                raise GoracsError("a predictions file lists a test index twice")
            runs.append(by)
            common = set(by) if common is None else common
            if set(by) != common:
                raise GoracsError("the runs compared did not score the same test samples")
        keyed.append(runs)
    if not common:
        raise GoracsError("no test samples to compare")
    order = sorted(common)
    first = keyed[0][0]
    users = [first[i].get("user", f"#{i}") for i in order]
    out = [[[by[i] for i in order] for by in arm] for arm in keyed]
    return out, order, users


def paired_difference(task: str, metric: str,
                      a_runs: Sequence[Sequence[Mapping[str, Any]]],
                      b_runs: Sequence[Sequence[Mapping[str, Any]]], *,
                      replicates: int = 2000, level: float = 0.95, seed: int = 0,
                      resample_runs: bool = False) -> Difference:
    """B's mean ``metric`` minus A's over the same test users, with a bootstrap interval.

    Parameters
    ----------
    task : {"ctr", "seqrec"}
    metric : str
        See :func:`metric_kind`.
    a_runs, b_runs : sequences of prediction-row lists
        The runs (seeds) of each arm, each a list of ``predictions.jsonl`` rows over the same
        test samples (``index``; ``user`` groups samples of one person).
    replicates : int
        Bootstrap replicates.
    level : float
        Coverage of the percentile interval.
    seed : int
        Seeds the replicates (same seed, same interval).
    resample_runs : bool
        Also redraw each arm's runs in every replicate.
    """
    if not a_runs or not b_runs:
        raise GoracsError("each arm needs at least one run")
    if replicates < 1 or not 0 < level < 1:
        raise GoracsError("replicates must be positive and level in (0, 1)")
    (a_rows, b_rows), _, users = align([a_runs, b_runs])
    kind = metric_kind(task, metric)
    va = [per_sample_values(task, metric, r) for r in a_rows]
    vb = [per_sample_values(task, metric, r) for r in b_rows]
    labels = va[0][1]
    for _, y in va + vb:
        if y is not None and not np.array_equal(y, labels):
            raise GoracsError("the runs compared disagree on the test labels")
    A = np.stack([v for v, _ in va])
    B = np.stack([v for v, _ in vb])

    def stat(M: np.ndarray, idx: np.ndarray) -> np.ndarray:
        if kind == "auc":
            return auc_rows(M[:, idx], labels[idx])
        return M[:, idx].mean(axis=1)

    everything = np.arange(A.shape[1])
    a0 = float(stat(A, everything).mean())
    b0 = float(stat(B, everything).mean())
    # Samples grouped by user: a replicate draws users, then takes all of their samples.
    _, owner = np.unique(np.asarray(users, dtype=str), return_inverse=True)
    members = np.argsort(owner, kind="stable")
    counts = np.bincount(owner)
    starts = np.concatenate([[0], np.cumsum(counts)])
    n_users = counts.size
    rng = np.random.default_rng(seed)
    diffs = np.empty(replicates)
    for k in range(replicates):
        drawn = rng.integers(0, n_users, n_users)
        if counts.max() == 1:
            idx = members[drawn]
        else:
            idx = np.concatenate([members[starts[u]:starts[u + 1]] for u in drawn])
        ra = stat(A, idx)
        rb = stat(B, idx)
        if resample_runs:
            ra = ra[rng.integers(0, ra.size, ra.size)]
            rb = rb[rng.integers(0, rb.size, rb.size)]
        diffs[k] = rb.mean() - ra.mean()
    tail = (1 - level) / 2
    lo, hi = np.nanquantile(diffs, [tail, 1 - tail])
    return Difference(a=a0, b=b0, diff=b0 - a0, lo=float(lo), hi=float(hi), level=level,
                      users=int(n_users), samples=int(A.shape[1]), runs_a=A.shape[0],
                      runs_b=B.shape[0], replicates=replicates)
