"""The metric arithmetic against examples worked out by hand."""

import itertools
import math

import numpy as np
import pytest

from goracs.evaluate import metrics as M


def test_l2_distances_by_hand():
    items = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]])
    d = M.l2_distances(np.array([[0.0, 0.0], [3.0, 0.0]]), items)
    assert d == pytest.approx(np.array([[0.0, 5.0, 1.0], [3.0, 4.0, 2.0]]))


def test_target_rank_counts_ties_against_the_target():
    d = np.array([0.5, 0.2, 0.5, 0.9])
    # 0.2 is closer, the other 0.5 ties: both rank above the target.
    assert M.target_rank(d, 0) == 2
    assert M.target_rank(d, 2) == 2
    assert M.target_rank(d, 1) == 0
    assert M.target_rank(d, 3) == 3


def test_target_rank_without_an_answer_embedding_is_last():
    d = np.full(4, np.nan)
    assert M.target_rank(d, 1) == 3


def test_generated_text_matching_no_title_ranks_by_distance():
    # Catalogue A=(0,0), B=(3,4), C=(1,0); the answer (0.9, 0) is no title's embedding.
    titles = ["A", "B", "C"]
    emb = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]])
    d = M.l2_distances(np.array([[0.9, 0.0]]), emb)[0]
    assert d == pytest.approx([0.9, math.sqrt(2.1**2 + 16), 0.1])
    assert M.rank_among_titles(d, titles, "C") == 0
    assert M.rank_among_titles(d, titles, "A") == 1
    assert M.rank_among_titles(d, titles, "B") == 2


def test_a_title_shared_by_several_items_takes_one_place():
    # Two items are called "A": same text, same embedding, same distance. They are one answer.
    titles = ["A", "B", "A", "C"]
    d = np.array([0.3, 0.2, 0.3, 0.1])
    assert M.rank_among_titles(d, titles, "A") == 2
    # Copies of another title are distinct items the model failed to separate: both count.
    assert M.rank_among_titles(np.array([0.5, 0.1, 0.1]), ["A", "B", "B"], "A") == 2


def test_target_missing_from_the_catalogue_is_a_miss():
    d = np.array([0.1, 0.2])
    assert M.rank_among_titles(d, ["A", "B"], "Z") is None
    ranks = [0, None]
    assert M.hit_ratio_at_k(ranks, 20) == 0.5
    assert M.ndcg_at_k(ranks, 20) == 0.5


def test_ndcg_and_hr_by_hand():
    ranks = [0, 1, 4, None, 10]
    assert M.hit_ratio_at_k(ranks, 1) == pytest.approx(0.2)
    assert M.ndcg_at_k(ranks, 1) == pytest.approx(0.2)
    assert M.hit_ratio_at_k(ranks, 5) == pytest.approx(0.6)
    assert M.ndcg_at_k(ranks, 5) == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 5)
    # Rank 10 is the 11th place: outside the top 10, inside the top 20.
    assert M.hit_ratio_at_k(ranks, 10) == pytest.approx(0.6)
    assert M.ndcg_at_k(ranks, 20) == pytest.approx(
        (1 + 1 / math.log2(3) + 1 / math.log2(6) + 1 / math.log2(12)) / 5)
    table = M.ranking_metrics(ranks)
    assert set(table) == {f"{m}@{k}" for m in ("NDCG", "HR") for k in (1, 5, 10, 20)}
    with pytest.raises(ValueError):
        M.ndcg_at_k(ranks, 0)


def test_auc_with_ties_by_hand():
    # 3 positives x 2 negatives = 6 pairs: 0.9/0.9 tie (1/2), 0.9>0.1, 0.4>0.1 twice,
    # 0.4<0.9 twice: 3.5 of 6.
    y = [1, 0, 1, 0, 1]
    s = [0.9, 0.9, 0.4, 0.1, 0.4]
    assert M.auc(y, s) == pytest.approx(3.5 / 6)


def _auc_pairs(y, s):
    pos = [b for a, b in zip(y, s, strict=True) if a == 1]
    neg = [b for a, b in zip(y, s, strict=True) if a == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0
               for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_matches_a_brute_force_pair_count_with_many_ties():
    rng = np.random.default_rng(3)
    for _ in range(20):
        y = rng.integers(0, 2, size=40)
        s = rng.integers(0, 5, size=40) / 4.0  # five distinct values: ties everywhere
        if y.min() == y.max():
            continue
        assert M.auc(y, s) == pytest.approx(_auc_pairs(y, s))


def test_auc_of_one_class_is_nan_and_extremes():
    assert math.isnan(M.auc([1, 1], [0.2, 0.3]))
    assert M.auc([0, 1], [0.1, 0.9]) == 1.0
    assert M.auc([0, 1], [0.9, 0.1]) == 0.0
    assert M.auc([0, 1, 0, 1], [0.5] * 4) == 0.5


def test_log_loss_and_accuracy_by_hand():
    assert M.log_loss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    # A certain mistake is clipped to a large, finite loss.
    assert M.log_loss([0], [1.0]) == pytest.approx(-math.log(1e-7), rel=1e-6)
    # Exactly 0.5 is a No.
    assert M.accuracy([0, 1, 1], [0.5, 0.7, 0.2]) == pytest.approx(2 / 3)
    out = M.ctr_metrics([0, 1, 1], [0.5, 0.7, 0.2])
    assert out["positive_rate"] == pytest.approx(2 / 3)
    assert out["mean_p_yes"] == pytest.approx(1.4 / 3)
    with pytest.raises(ValueError):
        M.auc([0, 2], [0.1, 0.2])
