"""Rows reduced to the rows of a table: per (dataset, task, method, budget), the mean and
sample standard deviation (ddof 1) of every metric over the seeds that finished, with notes on
the runs that did not."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from goracs.experiment.config import FULL_DATA
from goracs.experiment.rows import CORESET_STATS, STAGE_SECONDS, Row


@dataclass
class Cell:
    """Mean and sample standard deviation of one metric over the seeds that finished."""

    mean: float | None
    std: float | None
    n: int


def mean_std(values: Sequence[float | None]) -> Cell:
    """Mean and sample standard deviation (ddof 1; None for fewer than two values) of the
    values that are not None or NaN."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return Cell(None, None, 0)
    std = float(np.std(v, ddof=1)) if v.size > 1 else None
    return Cell(float(np.mean(v)), std, int(v.size))


@dataclass
class TableRow:
    """One (dataset, task, method, budget) of the table."""

    dataset: str
    task: str
    method: str
    budget: int | None
    n_seeds: int
    n_runs: int
    cells: dict[str, Cell]
    seconds: dict[str, Cell]
    notes: list[str]
    same_coreset: bool | None
    stats: dict[str, Cell] = field(default_factory=dict)


def aggregate(rows: Sequence[Row], metrics_of: Mapping[str, Sequence[str]]) -> list[TableRow]:
    """Group rows by (dataset, task, method, budget) in first-seen order and reduce the
    finished runs of each group to mean and standard deviation."""
    order: list[tuple[Any, ...]] = []
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for r in rows:
        # the full-data row's budget is only known once a run finished: group it by method
        k = (r.dataset, r.task, r.method, None if r.method == FULL_DATA else r.budget)
        if k not in groups:
            order.append(k)
            groups[k] = []
        groups[k].append(r)
    out = []
    for k in order:
        rs = groups[k]
        done = [r for r in rs if r.status == "done"]
        budgets = sorted({r.budget for r in done if r.budget is not None})
        budget = k[3] if k[3] is not None else (budgets[0] if len(budgets) == 1 else None)
        cells = {m: mean_std([r.metrics.get(m) for r in done]) for m in metrics_of[k[1]]}
        secs = {s: mean_std([r.seconds.get(s) for r in done]) for s in STAGE_SECONDS}
        stats = {s: mean_std([r.stats.get(s) for r in done]) for s in CORESET_STATS}
        notes = []
        for status in ("failed", "skipped", "pending"):
            these = [r for r in rs if r.status == status]
            if these:
                msgs = sorted({r.message for r in these if r.message})
                text = f"{len(these)} of {len(rs)} {'not run' if status == 'pending' else status}"
                if msgs:
                    text += ": " + "; ".join(msgs)
                notes.append(text)
        digests = {r.coreset_digest for r in done if r.coreset_digest}
        same = None if len(done) < 2 or not digests else len(digests) == 1
        out.append(TableRow(dataset=k[0], task=k[1], method=k[2], budget=budget,
                            n_seeds=len(done), n_runs=len(rs), cells=cells, seconds=secs,
                            notes=notes, same_coreset=same, stats=stats))
    return out
