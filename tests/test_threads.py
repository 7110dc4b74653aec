"""``--threads`` on the commands that run a model: checked before any work, applied to torch."""

from __future__ import annotations

import pytest
import torch

from goracs.cli import main
from goracs.errors import GoracsError
from goracs.threads import apply_threads


@pytest.mark.parametrize("argv", [
    ["evaluate", "--data", "missing-data", "--task", "seqrec", "--out", "o"],
    ["finetune", "--data", "missing.json", "--out", "o"],
    ["features", "missing-folder", "--task", "seqrec"],
    ["experiment", "cpu", "--dry-run"],
])
def test_zero_threads_is_a_one_line_error_before_any_work(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main([*argv, "--threads", "0"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    command = f"goracs {argv[0]}"
    assert err == (f"{command}: --threads: must be a positive integer, got 0 "
                   f"(see {command} --help)\n")
    assert not any(tmp_path.iterdir())


def test_threads_reach_torch():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        apply_threads(1)
        assert torch.get_num_threads() == 1
        apply_threads(None)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_dry_run_checks_but_leaves_torch_alone():
    before = torch.get_num_threads()
    with pytest.raises(GoracsError):
        apply_threads(-1, dry_run=True)
    apply_threads(before + 1, dry_run=True)
    assert torch.get_num_threads() == before
