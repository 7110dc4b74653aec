"""Paired comparison of two evaluations scored on the same test samples.

Two runs evaluated on the same test set differ sample by sample; comparing them on those pairs
removes the spread between samples that the two share, so a gain is judged against the
standard error of the per-sample differences rather than of each mean. Pure functions of
ranks, labels and scores, like :mod:`goracs.evaluate.metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from goracs.evaluate.metrics import auc, per_sample_gain


def paired_ranking_difference(ranks_a: Sequence[int | None], ranks_b: Sequence[int | None],
                              k: int, metric: str) -> dict[str, float]:
    """``metric@k`` of B minus that of A over paired samples.

    Returns ``a``, ``b``, ``diff`` (b - a), ``se`` (standard error of the mean per-sample
    difference, NaN below two samples), ``z`` (diff / se; NaN when se is 0), and ``wins`` /
    ``losses`` / ``ties``: the samples where B's gain is above, below or equal to A's.
    """
    ga = per_sample_gain(ranks_a, k, metric)
    gb = per_sample_gain(ranks_b, k, metric)
    if ga.shape != gb.shape:
        raise ValueError(f"paired runs need as many samples: {ga.size} against {gb.size}")
    d = gb - ga
    n = d.size
    diff = float(d.mean()) if n else float("nan")
    se = float(d.std(ddof=1) / np.sqrt(n)) if n >= 2 else float("nan")
    z = diff / se if se and np.isfinite(se) else float("nan")
    return {"a": float(ga.mean()) if n else float("nan"),
            "b": float(gb.mean()) if n else float("nan"),
            "diff": diff, "se": se, "z": z,
            "wins": int((d > 0).sum()), "losses": int((d < 0).sum()),
            "ties": int((d == 0).sum())}


def paired_auc_difference(labels: Sequence[int], scores_a: Sequence[float],
                          scores_b: Sequence[float], n_boot: int = 1000,
                          seed: int = 0) -> dict[str, float]:
    """AUC of B minus that of A on the same labelled samples, with a paired bootstrap.

    Each of ``n_boot`` resamples draws the samples with replacement (the same draw for both
    runs, from ``numpy.random.default_rng(seed)``) and skips draws with one class only.
    Returns ``a``, ``b``, ``diff``, ``se`` (the bootstrap standard deviation of the
    difference), ``low`` and ``high`` (its 2.5 and 97.5 percentiles) and ``resamples`` (the
    draws used).
    """
    y = np.asarray(labels)
    sa = np.asarray(scores_a, dtype=np.float64)
    sb = np.asarray(scores_b, dtype=np.float64)
    if not (y.shape == sa.shape == sb.shape) or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and scores {sa.shape}, {sb.shape} must match")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    a, b = auc(y, sa), auc(y, sb)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, y.size, y.size)
        yy = y[idx]
        if yy.min() == yy.max():
            continue
        diffs.append(auc(yy, sb[idx]) - auc(yy, sa[idx]))
    if not diffs:
        return {"a": a, "b": b, "diff": b - a, "se": float("nan"), "low": float("nan"),
                "high": float("nan"), "resamples": 0}
    arr = np.array(diffs)
    return {"a": a, "b": b, "diff": b - a, "se": float(arr.std(ddof=1)) if arr.size > 1
            else float("nan"), "low": float(np.percentile(arr, 2.5)),
            "high": float(np.percentile(arr, 97.5)), "resamples": int(arr.size)}
