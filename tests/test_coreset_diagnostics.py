"""Method-neutral coreset figures: hand-worked cases."""

import numpy as np
import pytest

from goracs.errors import GoracsError
from goracs.select.diagnostics import coreset_stats


def test_a_coreset_that_is_the_validation_set_has_zero_transport_cost():
    rng = np.random.default_rng(0)
    valid = rng.normal(size=(6, 3))
    pool = np.vstack([rng.normal(size=(10, 3)) + 5.0, valid])
    stats = coreset_stats(np.arange(10, 16), pool, valid)
    assert stats["ot_to_valid"] == pytest.approx(0.0, abs=1e-6)
    assert stats["grad_norm_ratio"] is None and stats["positive_rate"] is None
    # any other coreset of the pool is farther away
    assert coreset_stats(np.arange(0, 6), pool, valid)["ot_to_valid"] > 1.0


def test_a_shifted_copy_costs_the_length_of_the_shift():
    valid = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    pool = valid + np.array([3.0, 4.0])  # far apart points: each maps to its own shifted copy
    assert coreset_stats(np.arange(4), pool, valid)["ot_to_valid"] == pytest.approx(5.0, rel=1e-6)
    # two points each split over two validation points: mean distance over the plan
    two = coreset_stats(np.array([0, 1]), valid, valid)["ot_to_valid"]
    assert two == pytest.approx(0.5 * 0 + 0.5 * 10.0, rel=1e-6)


def test_gradient_ratio_and_label_share():
    emb = np.arange(8, dtype=np.float64).reshape(4, 2)
    grads = np.array([1.0, 1.0, 3.0, 3.0])
    labels = np.array([0, 1, 1, 1])
    stats = coreset_stats(np.array([2, 3]), emb, emb, grads, labels)
    assert stats["grad_norm_ratio"] == pytest.approx(3.0 / 2.0)
    assert stats["positive_rate"] == pytest.approx(1.0)
    whole = coreset_stats(np.arange(4), emb, emb, grads, labels)
    assert whole["grad_norm_ratio"] == pytest.approx(1.0) and whole["positive_rate"] == 0.75
    assert whole["ot_to_valid"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("idx", [np.array([], dtype=np.int64), np.array([0, 4]),
                                 np.array([-1])])
def test_bad_indices_fail_in_one_line(idx):
    emb = np.zeros((4, 2))
    with pytest.raises(GoracsError):
        coreset_stats(idx, emb, emb)
