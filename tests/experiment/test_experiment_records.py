"""Records of an experiment leave and come back without data, features or adapters, and the
runner counts the restored runs as done."""

from __future__ import annotations

import io
import json
from pathlib import Path

from experiment_helpers import config, make_prepared

from goracs.experiment.plan import build_plan
from goracs.experiment.runner import ExperimentRunner, Logger


def test_export_then_restore_resumes_where_it_stopped(tmp_path: Path, load_script):
    records = load_script("experiment_records")
    cfg = config(methods=["random", "goracs"], seeds=[0], zero_shot=False)
    first = tmp_path / "first"
    g = build_plan(cfg, first)[0]
    make_prepared(g.data_dir, cfg.tasks["ctr"].features)
    ExperimentRunner(cfg, first, log=Logger(io.StringIO()), until="select").run()

    saved = tmp_path / "records"
    assert records.main(["export", str(first), str(saved)]) == 0
    kept = sorted(p.relative_to(saved).as_posix() for p in saved.rglob("*") if p.is_file())
    assert "results.csv" in kept and "table.md" in kept
    assert sum(p.endswith("/selection.json") for p in kept) == 2
    assert not any(p.endswith(("coreset.json", ".npy", "train.json")) for p in kept)

    # another machine: the data prepared again, the records restored, nothing recomputed
    second = tmp_path / "second"
    g2 = build_plan(cfg, second)[0]
    make_prepared(g2.data_dir, cfg.tasks["ctr"].features)
    assert records.main(["restore", str(saved), str(second)]) == 0
    (second / "table.md").write_text("mine")
    assert records.main(["restore", str(saved), str(second)]) == 0
    assert (second / "table.md").read_text() == "mine"  # restore never overwrites
    log = io.StringIO()
    ExperimentRunner(cfg, second, log=Logger(log), until="select").run()
    assert [ln.split()[-1] for ln in log.getvalue().splitlines() if ln.startswith("select")] \
        == ["cached", "cached"]
    for r1, r2 in zip(g.runs, g2.runs, strict=True):
        a = json.loads((r1.select_dir / "selection.json").read_text())
        b = json.loads((r2.select_dir / "selection.json").read_text())
        assert a["indices"] == b["indices"]
    assert records.main(["restore", str(tmp_path / "nowhere"), str(second)]) == 2


def test_restore_leaves_out_a_fine_tuning_whose_adapter_would_be_missing(tmp_path: Path,
                                                                         load_script):
    records = load_script("experiment_records")
    saved = tmp_path / "records"
    for name in ("a", "b"):
        d = saved / "ml-1m-ctr" / "finetune" / name
        d.mkdir(parents=True)
        (d / "training.json").write_text("{}")
    ev = saved / "ml-1m-ctr" / "evaluate" / "a-eval"
    ev.mkdir(parents=True)
    (ev / "metrics.json").write_text("{}")
    (ev / "run.json").write_text(json.dumps({"paths": {"finetune": "ml-1m-ctr/finetune/a"}}))
    out = tmp_path / "out"
    assert records.main(["restore", str(saved), str(out)]) == 0
    assert (out / "ml-1m-ctr" / "finetune" / "a" / "training.json").is_file()
    assert not (out / "ml-1m-ctr" / "finetune" / "b").exists()  # evaluated nowhere: retrain
    assert records.main(["export", str(saved), str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "ml-1m-ctr" / "finetune" / "b" / "training.json").is_file()
