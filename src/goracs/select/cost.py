"""The POO cost matrix (method.md section 3), built in row blocks in float32.

    D_ij = ||e_i - e'_j|| / max D,   g_i = g_i / max g,   C_ij = D_ij - lambda * g_i,

then min-max scaled to [0, 1]. The scaling is affine, so it changes no argmin; it only puts
every instance on the same scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from goracs.errors import GoracsError

# Rows per block: 2048 x 5000 float32 GEMM results are about 40 MB.
_BLOCK_ROWS = 2048


# The element-wise steps after the GEMM, fused into one sweep over the block. Each element
# goes through the same float64 operations, in the same order, as the NumPy expressions
# they replace (a_sq + b_sq - 2 sq, max 0, sqrt, to float32; then to float64, times inv_d,
# minus the row's offset, times scale, clipped, to float32), so the values are bit-identical.
# One sweep through memory instead of a dozen makes the GEMM most of a pass over the pool.

@numba.njit(inline="always")
def _distance(a_sq, b_sq, sq):
    """One distance (float32) from the squared norms and the GEMM's dot product ``sq``."""
    x = (a_sq + b_sq) - 2.0 * np.float64(sq)
    if x < 0.0:
        x = 0.0
    return np.float32(np.sqrt(x))


@numba.njit(inline="always")
def _scaled(dist, inv_d, offset, scale):
    """One cost (float32): clip((dist inv_d - offset) scale, 0, 1)."""
    y = ((np.float64(dist) * inv_d) - offset) * scale
    if y < 0.0:
        y = 0.0
    elif y > 1.0:
        y = 1.0
    return np.float32(y)


@numba.njit(parallel=True, cache=True)
def _finish_distances(sq, a_sq, b_sq, out):
    """``out`` (float32): the distances of the GEMM result ``sq``."""
    for i in numba.prange(sq.shape[0]):
        for j in range(sq.shape[1]):
            out[i, j] = _distance(a_sq[i], b_sq[j], sq[i, j])


@numba.njit(parallel=True, cache=True)
def _scale_rows(dist, inv_d, offset, scale, out):
    """``out`` (float32): the costs of the distances ``dist``, row i offset by offset_i."""
    for i in numba.prange(dist.shape[0]):
        for j in range(dist.shape[1]):
            out[i, j] = _scaled(dist[i, j], inv_d, offset[i], scale)


@numba.njit(parallel=True, cache=True)
def _finish_costs(sq, a_sq, b_sq, inv_d, offset, scale, out):
    """:func:`_finish_distances` then :func:`_scale_rows` in one sweep (no distance array)."""
    for i in numba.prange(sq.shape[0]):
        for j in range(sq.shape[1]):
            out[i, j] = _scaled(_distance(a_sq[i], b_sq[j], sq[i, j]), inv_d, offset[i], scale)


def pairwise_distances(
    train_emb: np.ndarray, valid_emb: np.ndarray, out: np.ndarray | None = None,
    block_rows: int = _BLOCK_ROWS,
) -> np.ndarray:
    """Euclidean distances between rows of ``train_emb`` (N, d) and ``valid_emb`` (V, d).

    Written block by block into ``out`` (N, V) float32, so peak memory stays at the output
    plus one block. A row's values do not depend on the other rows of its block (a lone row
    is padded to two), so the streaming engine's blocks reproduce them bit for bit.
    """
    a = np.ascontiguousarray(train_emb, dtype=np.float32)
    b = np.ascontiguousarray(valid_emb, dtype=np.float32)
    n, v = a.shape[0], b.shape[0]
    if out is None:
        out = np.empty((n, v), dtype=np.float32)
    b_sq = np.einsum("ij,ij->i", b, b, dtype=np.float64)
    bt = np.ascontiguousarray(b.T)
    for start in range(0, n, block_rows):
        blk = a[start:start + block_rows]
        rows = blk.shape[0]
        a_sq = np.einsum("ij,ij->i", blk, blk, dtype=np.float64)
        if rows == 1:  # BLAS answers a lone row by another routine: pad it to two
            blk, a_sq = np.repeat(blk, 2, axis=0), np.repeat(a_sq, 2)
        sq = blk @ bt  # float32 GEMM: the one O(N V d) step
        _finish_distances(sq[:rows], a_sq, b_sq, out[start:start + rows])
    return out


def poo_cost(
    train_emb: np.ndarray,
    valid_emb: np.ndarray,
    grad_norms: np.ndarray | None = None,
    lam: float = 0.0,
    block_rows: int = _BLOCK_ROWS,
) -> np.ndarray:
    """The POO cost matrix C (N, V), float32, min-max scaled to [0, 1].

    Parameters
    ----------
    train_emb, valid_emb : (N, d) and (V, d) embeddings e_i and e'_j.
    grad_norms : (N,) gradient norms g_i; may be None when ``lam`` is 0.
    lam : lambda, the weight of the gradient term (0 gives pure embedding geometry).
    """
    check_lambda(grad_norms, lam)
    c = pairwise_distances(train_emb, valid_emb, block_rows=block_rows)
    consts = CostScale.from_extremes(c.max(axis=1), c.min(axis=1), grad_norms, lam)
    for start in range(0, c.shape[0], block_rows):
        sl = slice(start, start + block_rows)
        c[sl] = consts.normalise(c[sl], sl)
    return c


def check_lambda(grad_norms: np.ndarray | None, lam: float) -> None:
    """Refuse a lambda that is negative or not finite, or > 0 without gradient norms."""
    if lam != 0 and grad_norms is None:
        raise GoracsError("lambda > 0 needs gradient norms")
    if not np.isfinite(lam) or lam < 0:
        raise GoracsError(f"lambda must be a finite number >= 0, got {lam}")


@dataclass
class CostScale:
    """The constants that turn distances D (float32) into the scaled cost C (method.md section 3).

    ``inv_d`` is 1 / max D, ``g_term`` (N,) is lambda g_i / max g, and C = clip((D inv_d -
    g_term - c_min) * scale, 0, 1) with c_min, c_max the extremes of D/maxD - lambda g/maxg
    over the whole matrix and scale = 1 / (c_max - c_min).
    """

    inv_d: float
    g_term: np.ndarray
    c_min: float
    scale: float

    @classmethod
    def from_extremes(cls, row_max: np.ndarray, row_min: np.ndarray,
                      grad_norms: np.ndarray | None, lam: float) -> CostScale:
        """The constants from each training row's largest and smallest distance (float32).

        The extremes of D/maxD - lambda g follow from each row's extremes: no pass over the
        whole matrix is needed beyond the one that found them.
        """
        d_max = float(row_max.max())
        inv_d = 1.0 / d_max if d_max > 0 else 0.0
        if grad_norms is not None and lam != 0:
            g = np.asarray(grad_norms, dtype=np.float64)
            g_max = float(g.max())
            g_term = lam * (g / g_max if g_max > 0 else np.zeros_like(g))
        else:
            g_term = np.zeros(row_max.shape[0])
        lo = row_min.astype(np.float64) * inv_d - g_term
        hi = row_max.astype(np.float64) * inv_d - g_term
        c_min, c_max = float(lo.min()), float(hi.max())
        span = c_max - c_min
        return cls(inv_d, g_term, c_min, 1.0 / span if span > 0 else 1.0)

    def normalise(self, dist: np.ndarray, rows: slice | np.ndarray) -> np.ndarray:
        """The cost rows (float32) of distance rows ``dist`` of the training rows ``rows``."""
        out = np.empty(dist.shape, dtype=np.float32)
        _scale_rows(dist, self.inv_d, self.offsets(rows), self.scale, out)
        return out

    def offsets(self, rows: slice | np.ndarray) -> np.ndarray:
        """Each row's subtrahend before scaling: lambda g_i / max g + c_min."""
        return np.ascontiguousarray(self.g_term[rows] + self.c_min, dtype=np.float64)
