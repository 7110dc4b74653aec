"""Every method against random on the same test users, and the model-free reference rows.

For each (dataset, task, budget) that has finished random runs, every other row (each method,
the zero-shot row, the full-data row, the reference rule) is compared with random by
:func:`goracs.evaluate.bootstrap.paired_difference`: the difference in mean metric over the
arms' seeds, with a 95% interval from a bootstrap over test users (seeds pooled), and a second
interval that also redraws the seeds. The reference rule's predictions are written beside the
runs (``DATASET-TASK/reference/RULE/``) so that its figures can be recomputed like a run's.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from goracs.errors import GoracsError
from goracs.evaluate.bootstrap import metric_kind, metric_value
from goracs.evaluate.verdict import Comparison, compare, verdict_sentence
from goracs.experiment.config import ExperimentConfig
from goracs.experiment.plan import Group, Run
from goracs.io import atomic_write_json, atomic_write_text, read_jsonl

RANDOM = "random"
#: The model-free rule of each task, as its row is named in the tables.
REFERENCE = {"ctr": "liked-share rule", "seqrec": "popularity rule"}
PREDICTIONS = "predictions.jsonl"


def _done(run: Run) -> bool:
    return (run.eval_dir / "run.json").is_file() and (run.eval_dir / PREDICTIONS).is_file()


def _predictions(path: Path) -> list[dict[str, Any]]:
    rows = read_jsonl(path, "predictions")
    if not rows:
        raise GoracsError(f"{path}: no predictions")
    return rows


def reference_predictions(g: Group, indices: Sequence[int]) -> list[dict[str, Any]]:
    """The task's model-free rule on the group's test records at ``indices``."""
    from goracs.evaluate.rule_run import rule_predictions
    from goracs.records import load_records

    return rule_predictions(g.data_dir, g.task, load_records(g.data_dir / "test.json"),
                            indices)


def write_reference(g: Group, indices: Sequence[int], out: Path) -> list[dict[str, Any]]:
    """Score the rule on ``indices`` and write its ``predictions.jsonl`` and ``metrics.json``
    under ``out`` (reused while the indices are the same)."""
    from goracs.evaluate.rule_run import rule_metrics

    pred_path = out / PREDICTIONS
    want = [int(i) for i in indices]
    if pred_path.is_file():
        rows = read_jsonl(pred_path, "reference predictions")
        if [int(r["index"]) for r in rows] == want:
            return rows
    rows = reference_predictions(g, want)
    atomic_write_text(pred_path, "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                         for r in rows))
    atomic_write_json(out / "metrics.json", {"task": g.task, "rule": REFERENCE[g.task],
                                             "data": {"dir": str(g.data_dir),
                                                      "scored": len(rows)},
                                             "metrics": rule_metrics(g.task, rows)})
    return rows


def compare_with_random(cfg: ExperimentConfig, groups: Sequence[Group]
                        ) -> tuple[dict[tuple[str, str, str, int | None], dict[str, Comparison]],
                                   dict[tuple[str, str], dict[str, Any]]]:
    """Paired comparisons of every finished row with random at its budget, and the reference
    rule of each group.

    Returns ``(comparisons, references)``: comparisons keyed by (dataset, task, method,
    budget) then metric; references keyed by (dataset, task), each with ``name``, ``rows``
    (its prediction rows) and ``metrics`` (metric -> value on those rows).
    """
    comps: dict[tuple[str, str, str, int | None], dict[str, Comparison]] = {}
    refs: dict[tuple[str, str], dict[str, Any]] = {}
    for g in groups:
        tc = cfg.tasks[g.task]
        metrics = [m for m in tc.metrics if _comparable(g.task, m)]
        arms: dict[tuple[str, int | None], list[list[dict[str, Any]]]] = {}
        for run in g.runs:
            if _done(run):
                arms.setdefault((run.method, run.budget), []).append(
                    _predictions(run.eval_dir / PREDICTIONS))
        randoms = {b: rs for (m, b), rs in arms.items() if m == RANDOM}
        if not randoms:
            continue
        first = next(iter(randoms.values()))[0]
        indices = [int(r["index"]) for r in first]
        ref_rows: list[dict[str, Any]] | None = None
        try:
            ref_rows = write_reference(g, indices, g.root / "reference" /
                                       REFERENCE[g.task].replace(" ", "-"))
        except GoracsError as exc:  # records in another wording: the runs still compare
            print(f"{g.dataset} {g.task}: no {REFERENCE[g.task]} row: {exc}", file=sys.stderr)
        if ref_rows is not None:
            refs[(g.dataset, g.task)] = {"name": REFERENCE[g.task], "rows": ref_rows,
                                         "metrics": _metrics_of(g.task, metrics, ref_rows)}
        for budget, rand in randoms.items():
            rows_vs = {(m, b): rs for (m, b), rs in arms.items() if m != RANDOM}
            # rows without a budget (zero-shot, full data, the rule) meet random at every
            # budget; the others at their own
            todo = {k: v for k, v in rows_vs.items() if k[1] in (budget, None)}
            if ref_rows is not None:
                todo[(REFERENCE[g.task], None)] = [ref_rows]
            for (method, b), runs in todo.items():
                key = (g.dataset, g.task, method, b if b is not None else None)
                if b is None and len(randoms) > 1:
                    key = (g.dataset, g.task, f"{method} (vs random b={budget})", None)
                comps[key] = {m: compare(g.task, m, rand, runs) for m in metrics}
    return comps, refs


def _comparable(task: str, metric: str) -> bool:
    try:
        metric_kind(task, metric)
    except GoracsError:
        return False
    return True


def _metrics_of(task: str, metrics: Sequence[str], rows: list[dict[str, Any]]
                ) -> dict[str, float]:
    """The metrics of one set of prediction rows, as the paired comparison computes them."""
    return {m: metric_value(task, m, rows) for m in metrics}


def row_label(method: str, budget: int | None) -> str:
    """How a compared row is named in the sentences and the plots."""
    return method if budget is None else f"{method} (b={budget})"


def comparisons_summary(comps: Mapping[tuple[str, str, str, int | None], dict[str, Comparison]]
                        ) -> list[str]:
    """The Markdown bullets of the paired comparisons, one sentence each."""
    lines = []
    for (dataset, task, method, budget), per_metric in comps.items():
        for metric, c in per_metric.items():
            lines.append(f"- {dataset} {task}: "
                         f"{verdict_sentence(row_label(method, budget), RANDOM, metric, c)}")
    return lines
