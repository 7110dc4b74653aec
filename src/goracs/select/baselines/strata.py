"""Budget allocation over strata and the draws within them (integer arithmetic, exact sums)."""

from __future__ import annotations

import numpy as np


def proportional_allocation(sizes: np.ndarray, n: int) -> np.ndarray:
    """Split a budget ``n`` over strata in proportion to their sizes (largest remainder).

    Stratum k gets floor(n s_k / S) and the leftover units go to the largest fractional parts
    (ties: larger stratum, then lower index). Integer arithmetic, so the result sums to ``n``
    exactly and never exceeds a stratum's size when ``n <= S``.

    Parameters
    ----------
    sizes : (K,) non-negative stratum sizes s_k with S = sum(s_k) >= n.
    n : the budget.

    Returns
    -------
    (K,) int64 budgets.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if not 0 <= n <= total:
        raise ValueError(f"budget {n} outside [0, {total}]")
    scaled = sizes * n
    alloc = scaled // total
    frac = scaled % total
    left = n - int(alloc.sum())
    # lexsort: last key is primary; larger remainder first, then larger stratum, then index.
    order = np.lexsort((np.arange(len(sizes)), -sizes, -frac))
    alloc[order[:left]] += 1
    return alloc


def coverage_allocation(sizes: np.ndarray, n: int) -> np.ndarray:
    """CCS's budget split: serve the smallest stratum first with an even share of what is left.

    Visiting strata from smallest to largest, stratum k gets min(s_k, floor(m / r)), where m
    is the budget still open and r the number of strata not yet visited. Small strata are
    taken whole, so every non-empty stratum is drawn from when n is at least the number of
    non-empty strata, and the shares sum to ``n`` whenever sum(s_k) >= n.

    Parameters
    ----------
    sizes : (K,) non-negative stratum sizes.
    n : the budget.

    Returns
    -------
    (K,) int64 budgets, in the strata's own order.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if not 0 <= n <= int(sizes.sum()):
        raise ValueError(f"budget {n} outside [0, {int(sizes.sum())}]")
    alloc = np.zeros(len(sizes), dtype=np.int64)
    left = n
    order = np.argsort(sizes, kind="stable")
    for rank, k in enumerate(order):
        share = min(int(sizes[k]), left // (len(sizes) - rank))
        alloc[k] = share
        left -= share
    # Always reached: when a stratum is capped at the even share, the larger ones after it can
    # absorb the rest (see Zheng et al., 2023, Algorithm 1).
    assert left == 0
    return alloc


def score_strata(score: np.ndarray, k: int) -> np.ndarray:
    """Equal-width bins over the score range: stratum of every sample, in [0, k).

    The top of the range falls in the last bin; a constant score puts everything in bin 0.
    """
    lo, hi = float(score.min()), float(score.max())
    if hi <= lo:
        return np.zeros(score.shape[0], dtype=np.int64)
    ids = np.floor((score - lo) / (hi - lo) * k).astype(np.int64)
    return np.clip(ids, 0, k - 1)


def draw_within(labels: np.ndarray, budgets: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
    """Draw ``budgets[k]`` positions uniformly without replacement from each stratum k.

    Parameters
    ----------
    labels : (N,) stratum of every position, in [0, K).
    budgets : (K,) how many to draw from each stratum, each at most its size.
    rng : the generator; strata are visited in index order, so a seed fixes the result.

    Returns
    -------
    (sum(budgets),) int64 positions, grouped by stratum.
    """
    counts = np.bincount(labels, minlength=len(budgets))
    order = np.argsort(labels, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(counts)))
    picked = []
    for k, b in enumerate(budgets):
        if b > 0:
            members = order[bounds[k]:bounds[k + 1]]
            picked.append(rng.choice(members, size=int(b), replace=False))
    if not picked:
        return np.empty(0, dtype=np.int64)
    return np.concatenate(picked).astype(np.int64)
