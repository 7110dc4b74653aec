"""Recommendation and classification metrics as pure functions of ranks, labels and scores.

Nothing here touches a model or a file: the evaluation commands gather ranks and scores, and
these functions do the arithmetic, so every figure in ``metrics.json`` can be recomputed from
``predictions.jsonl`` with them.

Conventions
-----------
* A rank is 0-based: rank 0 is the top of the list. ``None`` marks a target that could not be
  ranked at all (missing from the catalogue); it counts as a miss in every metric.
* Each SeqRec test sample has exactly one relevant item, so DCG@K = 1 / log2(rank + 2) when
  rank < K, the ideal DCG is 1, and NDCG@K is the mean of that over samples.
* Ties in distance are broken against the target (pessimistic): a model whose output carries
  no information cannot climb the list by producing equal scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KS = (1, 5, 10, 20)


def l2_distances(queries: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Euclidean distances between every query row and every item row, in float64.

    Parameters
    ----------
    queries : (m, d) array
    items : (n, d) array

    Returns
    -------
    (m, n) float64 array; a query row holding NaN (no embedding) gives a row of NaN.
    """
    q = np.asarray(queries, dtype=np.float64)
    x = np.asarray(items, dtype=np.float64)
    if q.ndim != 2 or x.ndim != 2 or q.shape[1] != x.shape[1]:
        raise ValueError(f"expected (m, d) and (n, d) arrays, got {q.shape} and {x.shape}")
    # The expanded form |q|^2 - 2 q.x + |x|^2 is one matrix product instead of an (m, n, d)
    # difference tensor. In float64 the squared distance is off by about 1e-16 of the squared
    # norms: near zero that is a distance of ~1e-5 for hidden states of norm ~700, far below
    # the gaps between distinct titles; equal rows still give equal results, so ties are kept.
    sq = (q * q).sum(axis=1)[:, None] - 2.0 * (q @ x.T) + (x * x).sum(axis=1)[None, :]
    return np.sqrt(np.maximum(sq, 0.0))


def target_rank(distances: np.ndarray, target: int, exclude: np.ndarray | None = None) -> int:
    """0-based rank of candidate ``target`` when candidates are sorted by ascending distance.

    Parameters
    ----------
    distances : (n,) array
        Distance of each candidate to the query.
    target : int
        Index of the relevant candidate.
    exclude : (n,) bool array, optional
        Candidates left out of the ranking (other copies of the target's title, which no text
        can tell apart from the target).

    Returns
    -------
    int
        The number of other candidates at a distance smaller than or equal to the target's
        (ties count against the target). A NaN distance of the target (no embedding for the
        query) ranks it below every other candidate.
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 1 or not 0 <= target < d.shape[0]:
        raise ValueError(f"target {target} outside {d.shape[0]} candidates")
    others = np.ones(d.shape[0], dtype=bool)
    others[target] = False
    if exclude is not None:
        others &= ~np.asarray(exclude, dtype=bool)
    dt = d[target]
    if np.isnan(dt):
        return int(others.sum())
    return int(np.count_nonzero(d[others] <= dt))


def rank_among_titles(distances: np.ndarray, titles: Sequence[str], target: str) -> int | None:
    """Rank of the title ``target`` among candidate ``titles`` (which may repeat).

    Every copy of the target's title has the same text, hence the same embedding and distance;
    the copies are one answer, so they take one place in the list. Copies of other titles each
    keep their place (they are different items that the model failed to tell apart).

    Returns
    -------
    int or None
        ``None`` when ``target`` is not among ``titles``.
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.shape != (len(titles),):
        raise ValueError(f"{d.shape[0]} distances for {len(titles)} titles")
    same = np.fromiter((t == target for t in titles), dtype=bool, count=len(titles))
    hits = np.flatnonzero(same)
    if hits.size == 0:
        return None
    first = int(hits[0])
    return target_rank(d, first, exclude=same)


def _ranks_array(ranks: Sequence[int | None]) -> np.ndarray:
    return np.array([np.inf if r is None else float(r) for r in ranks], dtype=np.float64)


def per_sample_gain(ranks: Sequence[int | None], k: int, metric: str) -> np.ndarray:
    """Each sample's share of ``metric`` at ``k``: for ``"HR"`` 1 when rank < k, for
    ``"NDCG"`` 1 / log2(rank + 2) when rank < k; 0 otherwise (``None`` ranks included).
    HR@K and NDCG@K are the means of these."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if metric not in ("HR", "NDCG"):
        raise ValueError(f"metric must be 'HR' or 'NDCG', got {metric!r}")
    r = _ranks_array(ranks)
    gains = np.zeros_like(r)
    top = r < k
    gains[top] = 1.0 if metric == "HR" else 1.0 / np.log2(r[top] + 2.0)
    return gains


def _mean(gains: np.ndarray) -> float:
    return float(np.mean(gains)) if gains.size else float("nan")


def hit_ratio_at_k(ranks: Sequence[int | None], k: int) -> float:
    """HR@K: the share of samples whose target ranks in the top ``k`` (rank < k)."""
    return _mean(per_sample_gain(ranks, k, "HR"))


def ndcg_at_k(ranks: Sequence[int | None], k: int) -> float:
    """NDCG@K with one relevant item per sample: mean of 1 / log2(rank + 2) over rank < k."""
    return _mean(per_sample_gain(ranks, k, "NDCG"))


def ranking_metrics(ranks: Sequence[int | None], ks: Sequence[int] = KS) -> dict[str, float]:
    """``{"NDCG@K": ..., "HR@K": ...}`` for every K in ``ks``."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"NDCG@{k}"] = ndcg_at_k(ranks, k)
        out[f"HR@{k}"] = hit_ratio_at_k(ranks, k)
    return out


def _check_binary(labels: Sequence[int], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must be matching 1-D arrays")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    return y.astype(np.int64), s


def auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve: the probability that a random positive outscores a random
    negative, a tie counting one half (Mann-Whitney U with average ranks).

    Returns NaN when one class is absent.
    """
    y, s = _check_binary(labels, scores)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="stable")
    sorted_s = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    # Average 1-based rank over each run of equal scores, which is what gives ties one half.
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], s.size]
    for a, b in zip(starts, ends, strict=True):
        ranks[order[a:b]] = (a + 1 + b) / 2.0
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def log_loss(labels: Sequence[int], p_yes: Sequence[float], eps: float = 1e-7) -> float:
    """Mean binary cross-entropy; probabilities are clipped to [eps, 1 - eps] so one confident
    mistake gives a large but finite loss."""
    y, p = _check_binary(labels, p_yes)
    if y.size == 0:
        return float("nan")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def accuracy(labels: Sequence[int], p_yes: Sequence[float], threshold: float = 0.5) -> float:
    """Share of samples where ``p_yes > threshold`` agrees with the label (exactly at the
    threshold the prediction is No)."""
    y, p = _check_binary(labels, p_yes)
    if y.size == 0:
        return float("nan")
    return float(np.mean((p > threshold).astype(np.int64) == y))


def ctr_metrics(labels: Sequence[int], p_yes: Sequence[float]) -> dict[str, float]:
    """``{"AUC", "log_loss", "accuracy", "positive_rate", "mean_p_yes"}`` of CTR predictions."""
    y, p = _check_binary(labels, p_yes)
    return {
        "AUC": auc(y, p),
        "log_loss": log_loss(y, p),
        "accuracy": accuracy(y, p),
        "positive_rate": float(y.mean()) if y.size else float("nan"),
        "mean_p_yes": float(p.mean()) if p.size else float("nan"),
    }
