"""The learning-rate schedule and the early-stopping rule."""

import pytest

from goracs.train import lr_factor
from goracs.train.schedule import should_stop


def test_lr_schedule_warms_up_then_decays_to_zero():
    total, warm = 10, 2
    f = [lr_factor(s, total, warm) for s in range(total)]
    assert f[:2] == [0.5, 1.0]
    assert f[2] == 1.0 and f[-1] == pytest.approx(1 / 8)
    assert all(a >= b for a, b in zip(f[1:], f[2:], strict=False))
    assert [lr_factor(s, 4, 0) for s in range(4)] == [1.0, 0.75, 0.5, 0.25]


def test_early_stopping_counts_epochs_since_the_best():
    hist = [{"epoch": e} for e in (1, 2, 3, 4)]
    assert should_stop(hist, best_epoch=2, patience=2)
    assert not should_stop(hist, best_epoch=3, patience=2)
    assert not should_stop(hist, best_epoch=1, patience=None)
    assert not should_stop([], best_epoch=None, patience=1)
