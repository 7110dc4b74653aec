"""Claims: two processes of one experiment never compute the same unit; stale claims pass."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from experiment_helpers import config, make_prepared

from goracs.experiment.claims import CLAIMS_DIR, Claimed, claim, holder_of
from goracs.experiment.plan import build_plan
from goracs.experiment.runner import ExperimentRunner, Logger, execution_order


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_claim_is_exclusive_and_released(tmp_path: Path):
    with claim(tmp_path, "unit"):
        path = tmp_path / CLAIMS_DIR / "unit.claim"
        assert json.loads(path.read_text())["pid"] == os.getpid()
        assert holder_of(path) == f"pid {os.getpid()} on {socket.gethostname()}"
        with pytest.raises(Claimed), claim(tmp_path, "unit"):
            pass
    assert not path.exists()
    with pytest.raises(RuntimeError), claim(tmp_path, "unit"):  # released on failure too
        raise RuntimeError("boom")
    assert not path.exists()


def test_a_stale_claim_is_taken_over(tmp_path: Path):
    folder = tmp_path / CLAIMS_DIR
    folder.mkdir()
    path = folder / "unit.claim"
    path.write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname()}))
    with claim(tmp_path, "unit"):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    # an empty claim just written is a process starting, not a stale one
    path.write_text("")
    with pytest.raises(Claimed, match="writing its claim"), claim(tmp_path, "unit"):
        pass


def test_runs_held_elsewhere_are_left_to_their_holder(tmp_path: Path):
    cfg = config(methods=["random", "goracs"], seeds=[0, 1], zero_shot=False)
    g = build_plan(cfg, tmp_path)[0]
    make_prepared(g.data_dir, cfg.tasks["ctr"].features)
    held = next(r for r in g.runs if r.method == "goracs" and r.seed == 1)
    # a live process (this one, by another claim file) holds one run
    folder = tmp_path / CLAIMS_DIR
    folder.mkdir()
    (folder / f"{held.dataset}-{held.task}-{held.eval_dir.name}.claim").write_text(
        json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    log = io.StringIO()
    summary = ExperimentRunner(cfg, tmp_path, log=Logger(log), until="select").run()
    assert summary.outcomes[held.eval_dir].status == "pending"
    assert "left to pid" in log.getvalue()
    assert not held.select_dir.exists()
    others = [r for r in g.runs if r is not held]
    assert all((r.select_dir / "selection.json").is_file() for r in others)


def test_runs_are_taken_seed_by_seed():
    cfg = config(methods=["random", "goracs"], seeds=[0, 1, 2], full_data=True)
    runs = build_plan(cfg, Path("/tmp/x"))[0].runs
    order = [(r.method, r.seed) for r in execution_order(runs)]
    assert order[:5] == [("zero-shot", None), ("random", 0), ("goracs", 0), ("full", 0),
                         ("random", 1)]
    assert sorted(order, key=str) == sorted([(r.method, r.seed) for r in runs], key=str)


def test_runs_without_a_selection_come_before_the_features(tmp_path: Path):
    # a second process must not sit idle while the first computes the features: the zero-shot
    # run is tried before them (here another live process holds it, so it is left to that one)
    cfg = config(methods=["random"], seeds=[0], zero_shot=True)
    g = build_plan(cfg, tmp_path)[0]
    make_prepared(g.data_dir, cfg.tasks["ctr"].features)
    zero = next(r for r in g.runs if r.select_dir is None)
    folder = tmp_path / CLAIMS_DIR
    folder.mkdir()
    (folder / f"{zero.dataset}-{zero.task}-{zero.eval_dir.name}.claim").write_text(
        json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    log = io.StringIO()
    ExperimentRunner(cfg, tmp_path, log=Logger(log), until="select").run()
    lines = log.getvalue().splitlines()
    left = next(i for i, line in enumerate(lines) if "zero-shot" in line and "left to" in line)
    features = next(i for i, line in enumerate(lines) if line.startswith("features"))
    assert left < features
