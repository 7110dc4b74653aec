"""kill -9 in the middle of `goracs features` and `goracs finetune`, then a rerun: the arrays
and the adapter (fp32) are those of an uninterrupted run. Slow: each loads the packaged
models three times (about a minute apiece on 2 cores)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from faults_helpers import command, env, records, run_cli, write_json

pytestmark = pytest.mark.slow


def _start_and_kill(argv: list, cwd: Path, ready: Callable[[], bool], extra_delay: float,
                    limit: float = 600) -> int:
    """Start ``goracs ARGV``, wait until ``ready()`` (work in progress is on disk), wait
    ``extra_delay`` seconds more, and kill it with SIGKILL (unless it already ended); return
    its exit status."""
    proc = subprocess.Popen(command(argv), cwd=cwd, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    while proc.poll() is None and not ready():
        assert time.monotonic() - t0 < limit, "no progress on disk"
        time.sleep(0.05)
    time.sleep(extra_delay)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    return proc.wait()


def _prepared(root: Path) -> Path:
    src = root / "src"
    write_json(src / "train.json", records(24))
    write_json(src / "valid.json", records(4, start=100))
    proc = run_cli(["prepare", "--dataset", "json", "--task", "ctr", "--train",
                    src / "train.json", "--valid", src / "valid.json", "--out", root / "d"],
                   root)
    assert proc.returncode == 0, proc.stderr
    return root / "d"


def test_features_killed_mid_pass_then_rerun_match_an_uninterrupted_run(tmp_path):
    ref = _prepared(tmp_path / "ref")
    # batches of 1 sample, so the gradient pass keeps a shard every 8 samples (3 in all)
    argv = ["--quiet", "--threads", "1", "--batch-size", "1", "--max-length", "128",
            "--device", "cpu"]
    done = run_cli(["features", ref, *argv], tmp_path)
    assert done.returncode == 0, done.stderr
    d = _prepared(tmp_path / "killed")
    partial = d / ".features.goracs-partial"
    # killed once the gradient pass has kept a shard on disk, a random moment later
    delay = float(np.random.default_rng(16).uniform(0, 0.3))
    status = _start_and_kill(["features", d, *argv], tmp_path,
                             lambda: any(partial.rglob("shard-*.npy")), delay)
    assert status == -signal.SIGKILL  # killed mid-pass, not finished
    assert not (d / "features").exists()
    rerun = run_cli(["features", d, *argv], tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    want = json.loads((ref / "features" / "features.json").read_text())["files"]
    got = json.loads((d / "features" / "features.json").read_text())["files"]
    assert got == want
    for name in want.values():
        a, b = np.load(ref / "features" / name), np.load(d / "features" / name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert not [p.name for p in d.iterdir() if ".goracs-" in p.name]


def test_finetune_killed_mid_run_then_rerun_matches_an_uninterrupted_run(tmp_path):
    from safetensors.numpy import load_file

    data = write_json(tmp_path / "coreset.json", records(6))
    argv = ["finetune", "--data", data, "--epochs", "3", "--batch-size", "2",
            "--micro-batch-size", "2", "--cutoff-len", "128", "--dtype", "fp32", "--device",
            "cpu", "--threads", "1", "--quiet"]
    done = run_cli([*argv, "--out", tmp_path / "straight"], tmp_path)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "killed"
    first = tmp_path / ".killed.checkpoints" / "epoch-0001" / "state.json"
    delay = float(np.random.default_rng(16).uniform(0, 0.3))
    status = _start_and_kill([*argv, "--out", out], tmp_path, first.is_file, delay)
    assert status == -signal.SIGKILL  # killed mid-run, not finished
    assert not out.exists()
    rerun = run_cli([*argv, "--out", out], tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    w1 = load_file(str(tmp_path / "straight" / "adapter_model.safetensors"))
    w2 = load_file(str(out / "adapter_model.safetensors"))
    assert w1.keys() == w2.keys() and all(np.array_equal(w1[k], w2[k]) for k in w1)
    h1 = json.loads((tmp_path / "straight" / "training.json").read_text())["history"]
    h2 = json.loads((out / "training.json").read_text())["history"]
    assert [h["train_loss"] for h in h1] == [h["train_loss"] for h in h2]
    assert not (tmp_path / ".killed.checkpoints").exists()
    assert not [p.name for p in tmp_path.iterdir() if ".goracs-" in p.name]
