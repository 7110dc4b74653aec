"""Paired bootstrap over test users: definitions, pairing, grouping, verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from goracs.errors import GoracsError
from goracs.evaluate.bootstrap import (
    auc_rows,
    metric_value,
    paired_difference,
    per_sample_values,
)
from goracs.evaluate.metrics import auc, log_loss, ndcg_at_k


def ctr_rows(p, y, users=None):
    users = users if users is not None else [f"u{i}" for i in range(len(p))]
    return [{"index": i, "user": u, "label": int(t), "p_yes": float(q)}
            for i, (q, t, u) in enumerate(zip(p, y, users, strict=True))]


def seqrec_rows(ranks, users=None):
    users = users if users is not None else [f"u{i}" for i in range(len(ranks))]
    return [{"index": i, "user": u, "rank_sampled": r, "rank_full": None}
            for i, (r, u) in enumerate(zip(ranks, users, strict=True))]


def test_auc_rows_is_the_auc_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random((4, 300)), 1)  # many ties
    got = auc_rows(s, y)
    assert np.allclose(got, [auc(y, row) for row in s])
    assert np.isnan(auc_rows(s, np.ones(300))).all()


def test_metric_values_match_the_metrics():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    p = rng.random(200)
    rows = ctr_rows(p, y)
    assert metric_value("ctr", "AUC", rows) == pytest.approx(auc(y, p))
    assert metric_value("ctr", "log_loss", rows) == pytest.approx(log_loss(y, p))
    ranks = list(rng.integers(0, 100, 200)) + [None]
    assert metric_value("seqrec", "sampled.NDCG@10", seqrec_rows(ranks)) == \
        pytest.approx(ndcg_at_k(ranks, 10))
    with pytest.raises(GoracsError, match="no paired comparison"):
        per_sample_values("ctr", "mean_p_yes", rows)


def test_identical_arms_differ_by_nothing():
    rng = np.random.default_rng(2)
    rows = ctr_rows(rng.random(100), rng.integers(0, 2, 100))
    d = paired_difference("ctr", "AUC", [rows, rows], [rows], replicates=200)
    assert d.diff == 0 and d.lo == 0 and d.hi == 0
    assert d.verdict() == "tie" and d.users == 100 and d.runs_a == 2 and d.runs_b == 1


def test_a_clear_gain_is_found_and_a_shuffle_is_not():
    rng = np.random.default_rng(3)
    n = 1000
    y = rng.integers(0, 2, n)
    base = rng.random(n)
    good = [ctr_rows(np.clip(base * 0.2 + y * 0.5 + rng.random(n) * 0.3, 0, 1), y)
            for _ in range(3)]
    rand = [ctr_rows(rng.random(n), y) for _ in range(3)]
    d = paired_difference("ctr", "AUC", rand, good, replicates=500)
    assert d.verdict() == "better" and d.lo > 0.2
    assert d.diff == pytest.approx(np.mean([metric_value("ctr", "AUC", r) for r in good])
                                   - np.mean([metric_value("ctr", "AUC", r) for r in rand]))
    # lower log-loss is better: the verdict flips with the direction
    ll = paired_difference("ctr", "log_loss", rand, good, replicates=500)
    assert ll.hi < 0 and ll.verdict(higher_is_better=False) == "better"
    # two arms of the same noise: the interval covers zero
    other = [ctr_rows(rng.random(n), y) for _ in range(3)]
    assert paired_difference("ctr", "AUC", rand, other, replicates=500).verdict() == "tie"


def test_samples_of_one_user_are_drawn_together():
    # 20 users with 10 samples each; the gain sits on whole users, so a bootstrap that
    # keeps users together sees a wider spread than one that treats samples as independent.
    users = [f"u{i // 10}" for i in range(200)]
    gain_users = {f"u{k}" for k in range(0, 20, 3)}
    a = seqrec_rows([50] * 200, users)
    b = seqrec_rows([0 if u in gain_users else 50 for u in users], users)
    grouped = paired_difference("seqrec", "sampled.HR@10", [a], [b], replicates=1000)
    flat = paired_difference("seqrec", "sampled.HR@10", [seqrec_rows([50] * 200)],
                             [seqrec_rows([r["rank_sampled"] for r in b])], replicates=1000)
    assert grouped.users == 20 and flat.users == 200
    assert grouped.diff == flat.diff == pytest.approx(7 / 20)
    assert (grouped.hi - grouped.lo) > 2 * (flat.hi - flat.lo)


def test_redrawn_seeds_widen_the_interval():
    rng = np.random.default_rng(4)
    n = 500
    y = rng.integers(0, 2, n)
    rand = [ctr_rows(rng.random(n), y) for _ in range(2)]
    # one strong and one useless seed: pooling averages them, redrawing seeds does not
    arm = [ctr_rows(np.clip(y * 0.6 + rng.random(n) * 0.4, 0, 1), y), ctr_rows(rng.random(n), y)]
    pooled = paired_difference("ctr", "AUC", rand, arm, replicates=500)
    redrawn = paired_difference("ctr", "AUC", rand, arm, replicates=500, resample_runs=True)
    assert redrawn.hi - redrawn.lo > 2 * (pooled.hi - pooled.lo)


def test_runs_must_score_the_same_samples():
    rows = ctr_rows([0.2, 0.8, 0.5], [0, 1, 1])
    with pytest.raises(GoracsError, match="same test samples"):
        paired_difference("ctr", "AUC", [rows], [rows[:2]])
    flipped = [dict(r, label=1 - r["label"]) for r in rows]
    with pytest.raises(GoracsError, match="disagree on the test labels"):
        paired_difference("ctr", "AUC", [rows], [flipped])
    assert paired_difference("ctr", "AUC", [rows], [rows], seed=5, replicates=50) == \
        paired_difference("ctr", "AUC", [rows], [rows], seed=5, replicates=50)
