"""`goracs experiment` end to end on a tiny real config: MovieLens-1M CTR, the packaged
SmolLM2 and MiniLM, random and GORACS coresets, a zero-shot row. A rerun recomputes nothing
and rewrites every output byte for byte; a removed evaluation is recomputed alone and gives
the same predictions. Slow (a few minutes on 2 cores)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

pytest.importorskip("torch")

from goracs.cli import main  # noqa: E402

TINY = """
name = "e2e"
datasets = ["ml-1m"]
tasks = ["ctr"]
methods = ["random", "goracs"]
seeds = [0]
zero_shot = true

[task.ctr]
budgets = [4]
metrics = ["AUC", "log_loss"]

[task.ctr.prepare]
max_train = 24
valid_size = 8
test_size = 8

[task.ctr.features]
max_length = 256

[task.ctr.train]
epochs = 1
batch_size = 4
micro_batch_size = 4
cutoff_len = 256
max_valid = 4

[task.ctr.evaluate]
batch_size = 8
"""

STAGE_LINES = 2 + 1 + 2 * 3  # prepare, features; zero-shot evaluate; 2 runs x 3 stages


def _snapshot(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes()
            for p in sorted(out.rglob("*")) if p.is_file()}


def _stage_lines(err: str) -> list[str]:
    return [line for line in err.splitlines()
            if line.split(" ", 1)[0] in ("prepare", "features", "select", "finetune",
                                         "evaluate")]


def test_tiny_experiment_runs_then_reuses_everything(tmp_path, capsys):
    cfg = tmp_path / "e2e.toml"
    cfg.write_text(TINY)
    out = tmp_path / "out"
    args = ["experiment", str(cfg), "--out", str(out), "--quiet"]

    assert main(args) == 0
    first = capsys.readouterr()
    lines = _stage_lines(first.err)
    assert len(lines) == STAGE_LINES, first.err
    assert all(" computed " in line for line in lines), first.err
    assert "| goracs | 4 | 1 |" in first.out and "| zero-shot | 0 | 1 |" in first.out

    # the runs; the model-free reference rows after them are tested in test_experiment_report
    rows = [r for r in csv.DictReader((out / "results.csv").open())
            if r["status"] != "reference"]
    assert [(r["method"], r["status"]) for r in rows] == [
        ("zero-shot", "done"), ("random", "done"), ("goracs", "done")]
    for r in rows:
        assert 0.0 <= float(r["AUC"]) <= 1.0 and float(r["log_loss"]) > 0
        assert float(r["evaluate_seconds"]) > 0
    assert float(rows[2]["poo"]) > 0 and float(rows[2]["finetune_seconds"]) > 0
    # every coreset on one scale; the zero-shot row has none
    assert rows[0]["ot_to_valid"] == "" and all(float(r["ot_to_valid"]) > 0 for r in rows[1:])
    assert all(0.0 <= float(r["positive_rate"]) <= 1.0 for r in rows[1:])
    for name in ("table.csv", "table.md", "config.toml", "plots/ml-1m-ctr-metrics.png",
                 "plots/ml-1m-ctr-poo.png", "plots/ml-1m-ctr-projection.png"):
        assert (out / name).is_file(), name
    before = _snapshot(out)

    # A rerun finds every unit complete and rewrites the reports byte for byte.
    assert main(args) == 0
    second = capsys.readouterr()
    lines = _stage_lines(second.err)
    assert len(lines) == STAGE_LINES and all(line.rstrip().endswith(" cached")
                                             for line in lines), second.err
    assert _snapshot(out) == before
    assert main(args + ["--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "9 units: 9 cached, 0 to compute"

    # An evaluation lost (as if killed before its manifest) is recomputed alone, identically.
    ev = next((out / "ml-1m-ctr" / "evaluate").glob("goracs-b4-s0-*"))
    shutil.rmtree(ev)
    assert main(args) == 0
    third = capsys.readouterr()
    computed = [line for line in _stage_lines(third.err) if " computed " in line]
    assert len(computed) == 1 and computed[0].startswith("evaluate ml-1m ctr goracs")
    after = _snapshot(out)
    rel = ev.relative_to(out).as_posix()
    assert after[f"{rel}/predictions.jsonl"] == before[f"{rel}/predictions.jsonl"]
    assert (out / "results.csv").read_text().splitlines()[1:3] == \
        before["results.csv"].decode().splitlines()[1:3]
    new = list(csv.DictReader((out / "results.csv").open()))[2]
    assert (new["AUC"], new["log_loss"]) == (rows[2]["AUC"], rows[2]["log_loss"])
