"""Blockwise Euclidean geometry for the baselines: point distances, k-NN graphs, k-means.

Pools reach 10^5 samples of 384-d embeddings. A full N x N distance matrix would take 80 GB
in float64, and even ``X - x`` for one point is an N x d temporary, so distances come from the
expansion ||a - b||^2 = ||a||^2 + ||b||^2 - 2 a.b, computed over row blocks whose temporaries
stay near :data:`BLOCK_BYTES`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

import numba
import numpy as np
from tqdm import tqdm

#: Target size of one block's distance matrix; a few of these live at once.
BLOCK_BYTES = 1 << 27

T = TypeVar("T")


def progress_bar(total: int, desc: str, it: Iterable[T] | None = None) -> tqdm:
    """A tqdm bar on stderr, shown only on a terminal so logs and tests stay clean."""
    return tqdm(it, total=total, desc=desc, file=sys.stderr, leave=False, disable=None,
                mininterval=0.5)


def progress(it: Iterable[T], total: int, desc: str) -> Iterator[T]:
    """Iterate ``it`` behind a :func:`progress_bar`."""
    return iter(progress_bar(total, desc, it))


def as_points(x: np.ndarray) -> np.ndarray:
    """The embeddings as a C-contiguous float64 array (float32 sums drift on 10^5 rows)."""
    return np.ascontiguousarray(x, dtype=np.float64)


def row_norms_sq(x: np.ndarray) -> np.ndarray:
    """Squared L2 norm of every row, shape (N,)."""
    return np.einsum("ij,ij->i", x, x)


def rows_per_block(n_cols: int) -> int:
    """How many rows of an (rows x n_cols) float64 block fit in :data:`BLOCK_BYTES`."""
    return max(1, BLOCK_BYTES // (8 * max(1, n_cols)))


def sq_dists_to(x: np.ndarray, sq: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Squared distances from every row of ``x`` to ``point``, shape (N,).

    Parameters
    ----------
    x : (N, d) float64 points.
    sq : (N,) their squared norms (:func:`row_norms_sq`), computed once by the caller.
    point : (d,) the reference point.
    """
    d2 = x @ point
    d2 *= -2.0
    d2 += sq
    d2 += float(point @ point)
    # The expansion can dip a hair below zero for coincident points.
    np.maximum(d2, 0.0, out=d2)
    return d2


def sq_dists_block(a: np.ndarray, sq_a: np.ndarray, b: np.ndarray,
                   sq_b: np.ndarray) -> np.ndarray:
    """Squared distances between the rows of ``a`` (B, d) and ``b`` (M, d), shape (B, M)."""
    d2 = a @ b.T
    d2 *= -2.0
    d2 += sq_a[:, None]
    d2 += sq_b[None, :]
    np.maximum(d2, 0.0, out=d2)
    return d2


def knn(x: np.ndarray, k: int, desc: str = "k-NN graph") -> tuple[np.ndarray, np.ndarray]:
    """The k nearest other points of every point, by Euclidean distance.

    Candidates are ranked from a float32 Gram matrix, one row block at a time (the N^2 d
    product is the whole cost, and float32 halves it), then the distances of the k kept are
    recomputed exactly in float64.

    Parameters
    ----------
    x : (N, d) float64 points, N > k.
    k : number of neighbours.

    Returns
    -------
    neighbours : (N, k) int64, nearest first; ties go to the lower index.
    distances : (N, k) float64, ||x_i - x_j|| for each neighbour.
    """
    n = x.shape[0]
    if not 0 < k < n:
        raise ValueError(f"k must be in [1, {n - 1}], got {k}")
    x32 = x.astype(np.float32)
    sq = row_norms_sq(x)
    nbrs = np.empty((n, k), dtype=np.int64)
    key = np.empty((n, k), dtype=np.float64)
    step = min(n, rows_per_block(n) * 2)  # float32 rows are half the bytes
    starts = range(0, n, step)
    for s in progress(starts, len(starts), desc):
        e = min(n, s + step)
        _block_top_k(x32[s:e] @ x32.T, sq, s, nbrs[s:e], key[s:e])
    dists = np.empty((n, k), dtype=np.float64)
    step = max(1, min(n, BLOCK_BYTES // (8 * k * x.shape[1])))
    for s in range(0, n, step):
        e = min(n, s + step)
        dists[s:e] = np.linalg.norm(x[s:e, None, :] - x[nbrs[s:e]], axis=2)
    return nbrs, dists


@numba.njit(cache=True)
def _block_top_k(gram: np.ndarray, sq: np.ndarray, offset: int, out_idx: np.ndarray,
                 out_key: np.ndarray) -> None:  # pragma: no cover - compiled
    # Rank by ||x_j||^2 - 2 <x_i, x_j>: the squared distance less ||x_i||^2, a per-row
    # constant. One pass with a sorted k-slot buffer beats argpartition's copies on long rows.
    k = out_idx.shape[1]
    for r in range(gram.shape[0]):
        out_key[r, :] = np.inf
        out_idx[r, :] = -1
        me = offset + r
        for j in range(gram.shape[1]):
            if j == me:
                continue
            v = sq[j] - 2.0 * gram[r, j]
            if v < out_key[r, k - 1]:
                # Shift only strictly larger keys, so equal keys stay in index order.
                p = k - 1
                while p > 0 and out_key[r, p - 1] > v:
                    out_key[r, p] = out_key[r, p - 1]
                    out_idx[r, p] = out_idx[r, p - 1]
                    p -= 1
                out_key[r, p] = v
                out_idx[r, p] = j


def kmeans(x: np.ndarray, k: int, seed: int, max_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding from ``numpy.random.default_rng(seed)``.

    Parameters
    ----------
    x : (N, d) float64 points, N >= k.
    k : number of clusters.
    seed : seed of the k-means++ draws; the only source of randomness.
    max_iter : cap on Lloyd iterations (it stops earlier once no label changes).

    Returns
    -------
    labels : (N,) int64 cluster of every point, every cluster non-empty.
    centres : (k, d) float64.
    """
    n = x.shape[0]
    if not 0 < k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    rng = np.random.default_rng(seed)
    sq = row_norms_sq(x)
    centres = np.empty((k, x.shape[1]))
    first = int(rng.integers(n))
    centres[0] = x[first]
    closest = sq_dists_to(x, sq, x[first])
    for j in range(1, k):
        total = closest.sum()
        # All points coincide with a centre already: any further centre is as good as another.
        pick = int(rng.integers(n)) if total <= 0 else int(rng.choice(n, p=closest / total))
        centres[j] = x[pick]
        np.minimum(closest, sq_dists_to(x, sq, x[pick]), out=closest)

    labels = np.full(n, -1, dtype=np.int64)
    for _ in range(max_iter):
        new, d2min = _assign(x, sq, centres)
        counts = np.bincount(new, minlength=k)
        # An empty cluster takes over the point worst served by its centre, so k clusters
        # survive (stratified sampling needs every stratum it was promised).
        # Donors come from clusters of two or more, so no cluster is emptied in turn.
        for j in np.flatnonzero(counts == 0):
            far = int(np.argmax(np.where(counts[new] > 1, d2min, -1.0)))
            counts[new[far]] -= 1
            new[far] = j
            counts[j] = 1
        if np.array_equal(new, labels):
            break
        labels = new
        sums = np.zeros_like(centres)
        order = np.argsort(labels, kind="stable")
        bounds = np.concatenate(([0], np.cumsum(counts)))
        for j in range(k):
            sums[j] = x[order[bounds[j]:bounds[j + 1]]].sum(axis=0)
        centres = sums / counts[:, None]
    return labels, centres


def _assign(x: np.ndarray, sq: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre of every point and the squared distance to it."""
    n = x.shape[0]
    sq_c = row_norms_sq(centres)
    labels = np.empty(n, dtype=np.int64)
    d2min = np.empty(n)
    step = min(n, rows_per_block(centres.shape[0]))
    for s in range(0, n, step):
        e = min(n, s + step)
        d2 = sq_dists_block(x[s:e], sq[s:e], centres, sq_c)
        labels[s:e] = np.argmin(d2, axis=1)
        d2min[s:e] = d2[np.arange(e - s), labels[s:e]]
    return labels, d2min
