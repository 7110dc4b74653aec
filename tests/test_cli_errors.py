"""Argument errors of every goracs command: one line naming the command and the flag, exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("argv, expect", [
    (["select", "--budget", "x", "--out", "o"], "goracs select: --budget: invalid int value"),
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
