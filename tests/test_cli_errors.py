"""Argument errors of every goracs command: one line naming the command and the flag, exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("argv, expect", [
    (["select", "--budget", "x", "--out", "o"], "goracs select: --budget: must be an integer"),
    (["select", "--budget", "0", "--out", "o"],
     "goracs select: --budget: must be a positive integer, got 0"),
    (["finetune", "--data", "d", "--out", "o", "--lr", "inf"],
     "goracs finetune: --lr: must be a finite number"),
    (["select", "--out", "o"], "goracs select: the following arguments are required: --budget"),
    (["prepare", "--dataset", "nope", "--out", "o"], "goracs prepare: --dataset: invalid choice"),
    (["features"], "goracs features: the following arguments are required: DIR"),
    (["experiment", "cpu", "--until", "never"], "goracs experiment: --until: invalid choice"),
    (["frobnicate"], "goracs: COMMAND: invalid choice"),
])
def test_argument_errors_are_one_line(argv, expect, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "goracs.cli", *argv], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expect), proc.stderr
    assert lines[0].endswith("--help)") and proc.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_an_only_filter_that_matches_nothing_stops(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "goracs.cli", "experiment", "cpu", "--only",
                           "method=goracz", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("goracs: error: --only method=goracz: matches no run of cpu "
                                   "(see --dry-run for the plan)")
    assert not (tmp_path / "o").exists()


def test_a_non_finite_like_threshold_is_refused(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "goracs.cli", "prepare", "--dataset", "ml-100k",
                           "--task", "ctr", "--like-threshold", "nan", "--out", "o"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("goracs prepare: --like-threshold: must be a finite number")
    assert list(tmp_path.iterdir()) == []
    from goracs.data.prepare import build_prepared
    from goracs.errors import GoracsError

    with pytest.raises(GoracsError, match="like-threshold must be a finite number"):
        build_prepared(_tiny_table(), "ctr", _movies(), like_threshold=float("inf"))


def _movies():
    from goracs.data.prepare import default_domain

    return default_domain("ml-1m")


def _tiny_table():
    import numpy as np

    from goracs.data.table import Interactions

    users = np.repeat(np.arange(3), 20)
    items = np.tile(np.arange(20), 3)
    return Interactions.from_columns([f"u{u}" for u in users],
                                     [f"Film {i} (1990)" for i in items],
                                     np.full(60, 4.0), np.arange(60))
