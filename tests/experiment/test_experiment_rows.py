"""Records loaded once: the reports render from them alone, and a coreset's diagnostics come
from its selection.json when recorded there."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from experiment_helpers import config, make_prepared, write_predictions, write_record

from goracs.experiment import stages
from goracs.experiment.plan import MARKERS, build_plan
from goracs.experiment.report import render_reports
from goracs.experiment.rows import CORESET_STATS, load_records, load_rows

REPORTS = ("results.csv", "table.csv", "table.md", "plots/ml-1m-ctr-metrics.png",
           "plots/ml-1m-ctr-poo.png", "plots/ml-1m-ctr-projection.png",
           "plots/ml-1m-ctr-vs-random.png")


def _experiment(out: Path, seeds=(0, 1), predictions: bool = True):
    """Real selections on a hand-made prepared folder, a record for every run and (with
    ``predictions``) predictions for the paired comparisons."""
    cfg = config(seeds=list(seeds))
    groups = build_plan(cfg, out)
    g = groups[0]
    arrays = make_prepared(g.data_dir, cfg.tasks["ctr"].features)
    data = stages.load_selection_data(g.data_dir)
    records = json.loads((g.data_dir / "train.json").read_text())
    for k, run in enumerate(g.runs):
        if run.select_dir is not None:
            stages.select(run, cfg.tasks["ctr"].params[run.method], data, records)
        write_record(run, out, {"AUC": 0.55 + 0.01 * k, "log_loss": 0.7 - 0.01 * k},
                     {"select": 1.0, "finetune": 2.0, "evaluate": 3.0},
                     budget=0 if run.budget is None else None)
    if predictions:
        write_predictions(g)
    return cfg, groups, arrays


def _set_diagnostics(run, diagnostics) -> None:
    """Record ``diagnostics`` in the run's selection.json (None: a selection that records
    none, as older ones do)."""
    path = run.select_dir / MARKERS["select"]
    doc = json.loads(path.read_text())
    doc.pop("diagnostics", None)
    if diagnostics is not None:
        doc["diagnostics"] = diagnostics
    path.write_text(json.dumps(doc))


def test_reports_render_from_the_loaded_records_alone(tmp_path: Path):
    """Once loaded, the records are all the tables and plots need: with every run folder,
    prepared folder and feature array deleted, the reports come out byte for byte the same."""
    cfg, groups, _ = _experiment(tmp_path / "exp")
    records = load_records(cfg, groups, {})
    assert records.comps and records.refs
    assert any(r.stats for r in records.rows)
    first = tmp_path / "first"
    md = render_reports(cfg, first, records, "goracs experiment unit.toml")
    assert "*liked-share rule*" in md and "Training pool 40 samples" in md
    for g in groups:
        shutil.rmtree(g.root)
    assert not any((tmp_path / "exp").rglob("*.json"))
    again = tmp_path / "again"
    assert render_reports(cfg, again, records, "goracs experiment unit.toml") == md
    for name in REPORTS:
        assert (again / name).read_bytes() == (first / name).read_bytes(), name


def test_recorded_diagnostics_are_read_not_recomputed(tmp_path: Path, monkeypatch):
    cfg, groups, _ = _experiment(tmp_path, seeds=(0,), predictions=False)
    stored = {"ot_to_valid": 1.25, "grad_norm_ratio": 0.5, "positive_rate": 0.75}
    selected = [r for r in groups[0].runs if r.select_dir is not None]
    for run in selected:
        _set_diagnostics(run, stored)

    def recompute(*args, **kwargs):
        raise AssertionError("coreset_stats recomputed a recorded diagnostics")

    monkeypatch.setattr("goracs.select.diagnostics.coreset_stats", recompute)
    rows = load_rows(groups, {})
    with_coreset = [r for r in rows if r.selection is not None]
    assert len(with_coreset) == len(selected) == 2
    assert all(r.stats == stored for r in with_coreset)


def test_selections_without_diagnostics_get_them_computed(tmp_path: Path):
    """An older selection.json (no diagnostics) gets the figures computed from the group's
    features, as the reports always did."""
    from goracs.select.diagnostics import coreset_stats

    cfg, groups, arrays = _experiment(tmp_path, seeds=(0,), predictions=False)
    selected = [r for r in groups[0].runs if r.select_dir is not None]
    for run in selected:
        _set_diagnostics(run, None)
    rows = load_rows(groups, {})
    with_coreset = [r for r in rows if r.selection is not None]
    assert len(with_coreset) == len(selected) == 2
    for run, r in zip(selected, with_coreset, strict=True):
        indices = json.loads((run.select_dir / MARKERS["select"]).read_text())["indices"]
        assert r.selection.indices.tolist() == indices
        want = coreset_stats(np.asarray(indices), arrays["train_emb"], arrays["valid_emb"],
                             arrays["grad_norms"], arrays["train_labels"])
        assert set(r.stats) == set(CORESET_STATS)
        assert r.stats == pytest.approx(want)
    # the zero-shot row selects nothing and gets no figures
    assert not next(r for r in rows if r.method == "zero-shot").stats


def test_the_data_line_says_who_the_samples_come_from(tmp_path: Path):
    cfg, groups, _ = _experiment(tmp_path / "exp")
    meta_path = groups[0].data_dir / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["counts"]["splits"]["valid"].update(users=3, top5_share=1.0)
    meta_path.write_text(json.dumps(meta))
    md = render_reports(cfg, tmp_path / "out", load_records(cfg, groups, {}), "unit")
    assert "Training pool 40 samples, validation 10 from 3 users (top 5: 100.0%), test" in md
