"""Tables from hand-written run records: means, sample standard deviations, notes."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import pytest
from experiment_helpers import config, make_prepared, write_predictions, write_record

from goracs.experiment.plan import build_plan
from goracs.experiment.report import write_reports
from goracs.experiment.rows import Outcome, load_rows
from goracs.experiment.table_rows import aggregate, mean_std
from goracs.experiment.tables import table_csv


def test_mean_std_is_the_sample_deviation():
    c = mean_std([0.5, 0.7, 0.6])
    assert c.mean == pytest.approx(0.6) and c.n == 3
    assert c.std == pytest.approx(math.sqrt(((0.1) ** 2 + 0 + (0.1) ** 2) / 2))
    one = mean_std([0.4, None, float("nan")])
    assert one.mean == 0.4 and one.std is None and one.n == 1
    assert mean_std([]).mean is None


@pytest.fixture()
def finished(tmp_path: Path):
    """A plan of zero-shot + random and goracs x 3 seeds + full data, with records for all
    but one goracs seed (failed in this invocation)."""
    cfg = config(full_data=True)
    groups = build_plan(cfg, tmp_path)
    g = groups[0]
    make_prepared(g.data_dir, cfg.tasks["ctr"].features)
    runs = {(r.method, r.seed): r for r in g.runs}
    write_record(runs[("zero-shot", None)], tmp_path, {"AUC": 0.52, "log_loss": 0.69},
                 {"select": None, "finetune": None, "evaluate": 10.0}, budget=0)
    for seed, (auc, ll) in enumerate([(0.60, 0.67), (0.64, 0.66), (0.62, 0.68)]):
        write_record(runs[("random", seed)], tmp_path, {"AUC": auc, "log_loss": ll},
                     {"select": 0.01, "finetune": 100.0 + seed, "evaluate": 20.0},
                     digest=f"d{seed}")
    for seed, (auc, ll) in enumerate([(0.70, 0.64), (0.66, 0.65)]):
        write_record(runs[("goracs", seed)], tmp_path, {"AUC": auc, "log_loss": ll},
                     {"select": 2.0, "finetune": 90.0, "evaluate": 20.0}, digest="same")
    for seed in range(3):
        write_record(runs[("full", seed)], tmp_path, {"AUC": 0.68, "log_loss": 0.62 + seed / 100},
                     {"select": None, "finetune": 900.0, "evaluate": 20.0}, budget=40)
    outcomes = {runs[("goracs", 2)].eval_dir: Outcome("failed", "finetune: out of memory")}
    return cfg, groups, outcomes


def test_aggregate_means_and_notes(finished):
    cfg, groups, outcomes = finished
    rows = load_rows(groups, outcomes)
    assert [r.status for r in rows].count("done") == 9
    assert [r.status for r in rows].count("failed") == 1
    trows = {t.method: t for t in aggregate(rows, {"ctr": ["AUC", "log_loss"]})}
    assert list(trows) == ["zero-shot", "random", "goracs", "full"]
    rnd, gor, full = trows["random"], trows["goracs"], trows["full"]
    assert rnd.n_seeds == 3 and rnd.cells["AUC"].mean == pytest.approx(0.62)
    assert rnd.cells["AUC"].std == pytest.approx(0.02)
    assert rnd.seconds["finetune"].mean == pytest.approx(101.0)
    assert gor.n_seeds == 2 and gor.n_runs == 3
    assert gor.cells["AUC"].mean == pytest.approx(0.68)
    assert gor.cells["AUC"].std == pytest.approx(math.sqrt(2 * 0.02 ** 2))
    assert gor.notes == ["1 of 3 failed: finetune: out of memory"]
    assert gor.same_coreset is True and rnd.same_coreset is False
    assert full.budget == 40 and full.cells["log_loss"].mean == pytest.approx(0.63)
    z = trows["zero-shot"]
    assert z.budget == 0 and z.n_seeds == 1 and z.cells["AUC"].std is None

    table = list(csv.DictReader(io.StringIO(table_csv(list(trows.values()),
                                                      ["AUC", "log_loss"]))))
    assert table[1]["method"] == "random" and table[1]["AUC mean"] == "0.620000"
    assert table[1]["AUC std"] == "0.020000" and table[1]["seeds"] == "3"
    assert table[0]["AUC std"] == "" and table[3]["budget"] == "40"


def test_reports_are_written_and_stable(finished, tmp_path: Path):
    cfg, groups, outcomes = finished
    rows, md = write_reports(cfg, tmp_path, groups, outcomes, "goracs experiment unit.toml")
    results = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(results) == 10
    assert [r["status"] for r in results].count("failed") == 1
    assert results[1]["AUC"] == "0.600000" and results[1]["finetune_seconds"] == "100.000"
    text = (tmp_path / "table.md").read_text()
    assert text == md
    assert "- command: `goracs experiment unit.toml`" in text
    assert "- commit: `abc123`" in text
    assert "9 done, 0 skipped, 1 failed, 0 not run" in text
    # best mean per metric among the selection methods is bold: AUC highest, log-loss lowest
    goracs_line = next(line for line in text.splitlines() if line.startswith("| goracs "))
    random_line = next(line for line in text.splitlines() if line.startswith("| random "))
    assert "**0.6800** ± 0.0283" in goracs_line and "**0.6450** ±" in goracs_line
    assert "**" not in random_line
    assert "Same coreset for every seed" in text and "goracs" in text
    # total stage time sums the recorded stage seconds (features 12.5 s included)
    assert "total stage time" in text and "features 12.5 s" in text
    for name in ("results.csv", "table.csv", "table.md", "plots/ml-1m-ctr-metrics.png"):
        assert (tmp_path / name).is_file()
    before = {p: p.read_bytes() for p in tmp_path.glob("*.*")}
    write_reports(cfg, tmp_path, groups, outcomes, "goracs experiment unit.toml")
    assert {p: p.read_bytes() for p in tmp_path.glob("*.*")} == before


def test_every_row_is_compared_with_random_on_the_same_users(finished, tmp_path: Path):
    """With predictions beside the records, each row gets its difference from random with a
    bootstrap interval, and the liked-share rule joins the table as a row."""
    import json

    cfg, groups, outcomes = finished
    g = groups[0]
    write_predictions(g, strong="goracs")
    rows, md = write_reports(cfg, tmp_path, groups, outcomes, "goracs experiment unit.toml")
    head = next(line for line in md.splitlines() if line.startswith("| method "))
    assert "AUC vs random" in head and "log_loss vs random" in head
    goracs_line = next(line for line in md.splitlines() if line.startswith("| goracs "))
    assert goracs_line.count(" [+") >= 1  # a gain with an interval above zero
    assert "goracs (b=4) beats random on AUC" in md
    assert "zero-shot ties with random on AUC" in md
    assert "*liked-share rule*" in md
    results = list(csv.DictReader((tmp_path / "results.csv").open()))
    ref = [r for r in results if r["status"] == "reference"]
    assert len(ref) == 1 and ref[0]["method"] == "liked-share rule"
    gor = [r for r in results if r["method"] == "goracs" and r["status"] == "done"]
    assert all(float(r["AUC vs random lo"]) > 0 for r in gor)
    # the rule's predictions are written beside the runs and recompute its AUC
    from goracs.evaluate.metrics import auc

    ref_rows = [json.loads(x) for x in (g.root / "reference" / "liked-share-rule" /
                                        "predictions.jsonl").read_text().splitlines()]
    assert float(ref[0]["AUC"]) == pytest.approx(
        auc([r["label"] for r in ref_rows], [r["p_yes"] for r in ref_rows]), abs=1e-6)
