"""Every record the reports of an experiment show, loaded once.

:func:`load_records` reads, per (dataset, task), the group's ``meta.json``,
``experiment-prepare.json`` and ``features/features.json`` (sample counts, stage seconds), the
pool and validation embeddings the projection plot draws, and per planned run its ``run.json``
(metrics, seconds, POO, coreset digest, commit) and ``selection.json`` (indices, POO trace and
the coreset's :data:`CORESET_STATS` under ``diagnostics``); then the paired comparisons with
random (:mod:`goracs.experiment.paired`, which reads the runs' predictions and the reference
rules' records). The tables and plots are rendered from the result and read no file.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from goracs.errors import GoracsError
from goracs.experiment.config import ZERO_SHOT, ExperimentConfig
from goracs.experiment.paired import compare_with_random
from goracs.experiment.plan import MARKERS, RUN_RECORD, Group, Run
from goracs.experiment.stages import PREPARE_RECORD
from goracs.io import load_array, read_json
from goracs.prepared import folder_inputs

STAGE_SECONDS = ("select", "finetune", "evaluate")
#: Method-neutral figures of each coreset (:func:`goracs.select.diagnostics.coreset_stats`).
CORESET_STATS = ("ot_to_valid", "grad_norm_ratio", "positive_rate")
#: The feature arrays :func:`goracs.select.diagnostics.coreset_stats` reads.
STATS_ARRAYS = ("train_emb", "valid_emb", "grad_norms", "train_labels")


@dataclass
class Outcome:
    """What became of a run in this invocation: ``done``, ``skipped``, ``failed`` or
    ``pending`` (not reached, e.g. filtered out by ``--only``)."""

    status: str
    message: str = ""


@dataclass(frozen=True)
class Selection:
    """A run's selected coreset as ``selection.json`` records it: the budget it was selected
    at, the pool indices and the POO after each refinement step."""

    budget: int | None
    indices: np.ndarray
    trace: tuple[float, ...] = ()


@dataclass
class Row:
    """One run as ``results.csv`` shows it; ``selection`` is its coreset when one was
    selected (whether or not the run finished)."""

    dataset: str
    task: str
    method: str
    budget: int | None
    seed: int | None
    status: str
    message: str = ""
    metrics: dict[str, float | None] = field(default_factory=dict)
    seconds: dict[str, float | None] = field(default_factory=dict)
    poo: float | None = None
    coreset_digest: str | None = None
    commit: str | None = None
    stats: dict[str, float | None] = field(default_factory=dict)
    selection: Selection | None = None


@dataclass
class GroupRecords:
    """The rows of one (dataset, task) and what its shared folder recorded.

    ``splits`` is ``meta.json``'s sample counts per split (None: not prepared yet);
    ``pool_emb`` and ``valid_emb`` are the features' embeddings, loaded when the group has a
    selection to draw (None otherwise or when absent). ``data_dir`` is only named.
    """

    dataset: str
    task: str
    data_dir: Path
    rows: list[Row]
    splits: dict[str, Any] | None = None
    prepare_seconds: float = 0.0
    features_seconds: float = 0.0
    pool_emb: np.ndarray | None = None
    valid_emb: np.ndarray | None = None


@dataclass
class Records:
    """Everything the reports show: the groups in plan order and the paired comparisons
    (:func:`goracs.experiment.paired.compare_with_random`'s two mappings)."""

    groups: list[GroupRecords]
    comps: dict[tuple[str, str, str, int | None], dict[str, Any]] = field(default_factory=dict)
    refs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    @property
    def rows(self) -> list[Row]:
        return [r for g in self.groups for r in g.rows]


def load_records(cfg: ExperimentConfig, groups: Sequence[Group],
                 outcomes: Mapping[Path, Outcome]) -> Records:
    """Every group's records and the paired comparisons; a malformed predictions file
    leaves the comparisons out (one line on stderr) rather than cost the tables."""
    records = Records([group_records(g, outcomes) for g in groups])
    try:
        records.comps, records.refs = compare_with_random(cfg, groups)
    except GoracsError as exc:
        print(f"paired comparisons left out: {exc}", file=sys.stderr)
    return records


def load_rows(groups: Sequence[Group], outcomes: Mapping[Path, Outcome]) -> list[Row]:
    """The rows of every group (see :func:`group_rows`)."""
    return [r for g in groups for r in group_rows(g, outcomes)]


def group_records(g: Group, outcomes: Mapping[Path, Outcome]) -> GroupRecords:
    rows = group_rows(g, outcomes)
    rec = GroupRecords(dataset=g.dataset, task=g.task, data_dir=g.data_dir, rows=rows)
    meta = g.data_dir / MARKERS["prepare"]
    if meta.is_file():
        rec.splits = read_json(meta).get("counts", {}).get("splits", {})
    p = g.data_dir / PREPARE_RECORD
    if p.is_file():
        rec.prepare_seconds = float(read_json(p).get("seconds") or 0.0)
    f = g.data_dir / MARKERS["features"]
    if f.is_file():
        rec.features_seconds = float(read_json(f).get("seconds", {}).get("total") or 0.0)
    feats = g.data_dir / "features"
    if any(r.selection is not None for r in rows) and (feats / "train_emb.npy").is_file() \
            and (feats / "valid_emb.npy").is_file():
        rec.pool_emb = load_array(feats / "train_emb.npy")
        rec.valid_emb = load_array(feats / "valid_emb.npy")
    return rec


def group_rows(g: Group, outcomes: Mapping[Path, Outcome]) -> list[Row]:
    """A row per planned run: from its ``run.json`` when complete, else from this
    invocation's outcome (skipped, failed) or ``pending``. Finished runs with a selected
    coreset also get its :data:`CORESET_STATS`: the ``diagnostics`` their ``selection.json``
    records, or, for a selection that records none, the figures computed here when the
    group's features are there (not for the full-data row: an exact OT over the whole pool
    would cost more than the report)."""
    rows = []
    arrays: dict[str, np.ndarray | None] | None = None
    for run in g.runs:
        row = row_of(run, outcomes.get(run.eval_dir))
        sel = selection_doc(run)
        if sel is not None:
            row.selection = Selection(budget=run.budget,
                                      indices=np.asarray(sel["indices"], dtype=np.int64),
                                      trace=tuple(sel.get("trace") or ()))
        if row.status == "done" and run.select_dir is not None:
            stored = None if sel is None else sel.get("diagnostics")
            if isinstance(stored, dict):
                row.stats = {k: stored[k] for k in CORESET_STATS if k in stored}
            elif row.selection is not None:
                if arrays is None:
                    arrays = _stats_arrays(g)
                row.stats = _coreset_stats(row.selection.indices, arrays)
        rows.append(row)
    return rows


def selection_doc(run: Run) -> dict[str, Any] | None:
    """The run's ``selection.json``, or None when it selects nothing or has not yet."""
    if run.select_dir is None:
        return None
    p = run.select_dir / MARKERS["select"]
    return read_json(p) if p.is_file() else None


def _stats_arrays(g: Group) -> dict[str, np.ndarray | None]:
    """The group's feature arrays :func:`_coreset_stats` reads (None when absent)."""
    paths, _ = folder_inputs(g.data_dir)
    return {n: load_array(paths[n]) if n in paths else None for n in STATS_ARRAYS}


def _coreset_stats(indices: np.ndarray, arrays: Mapping[str, np.ndarray | None]
                   ) -> dict[str, float | None]:
    """The figures of a coreset of the group's pool; empty without the embeddings."""
    from goracs.select.diagnostics import coreset_stats

    train, valid = arrays.get("train_emb"), arrays.get("valid_emb")
    if train is None or valid is None:
        return {}
    return coreset_stats(indices, train, valid, arrays.get("grad_norms"),
                         arrays.get("train_labels"))


def row_of(run: Run, outcome: Outcome | None) -> Row:
    rec_path = run.eval_dir / RUN_RECORD
    if rec_path.is_file():
        rec = read_json(rec_path)
        return Row(dataset=run.dataset, task=run.task, method=run.method,
                   budget=rec.get("budget"), seed=run.seed, status="done",
                   metrics=dict(rec.get("metrics") or {}),
                   seconds=dict(rec.get("seconds") or {}), poo=rec.get("poo"),
                   coreset_digest=rec.get("coreset_digest"), commit=rec.get("commit"))
    status, message = ("pending", "") if outcome is None else (outcome.status, outcome.message)
    if status == "done":  # a record that vanished since: treat as not run
        status = "pending"
    budget = 0 if run.method == ZERO_SHOT else run.budget
    return Row(dataset=run.dataset, task=run.task, method=run.method, budget=budget,
               seed=run.seed, status=status, message=message)
