"""The POO cost matrix (method.md section 3), built in row blocks in float32.

    D_ij = ||e_i - e'_j|| / max D,   g_i = g_i / max g,   C_ij = D_ij - lambda * g_i,

then min-max scaled to [0, 1]. The scaling is affine, so it changes no argmin; it only puts
every instance on the same scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from goracs.errors import GoracsError

# Rows per block: 2048 x 5000 float64 temporaries are about 80 MB.
_BLOCK_ROWS = 2048


def pairwise_distances(
    train_emb: np.ndarray, valid_emb: np.ndarray, out: np.ndarray | None = None,
    block_rows: int = _BLOCK_ROWS,
) -> np.ndarray:
    """Euclidean distances between rows of ``train_emb`` (N, d) and ``valid_emb`` (V, d).

    Written block by block into ``out`` (N, V) float32, so peak memory stays at the output
    plus one block.
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
        a_sq = np.einsum("ij,ij->i", blk, blk, dtype=np.float64)
        sq = blk @ bt  # float32 GEMM: the one O(N V d) step
        sq = a_sq[:, None] + b_sq[None, :] - 2.0 * sq.astype(np.float64)
        np.maximum(sq, 0.0, out=sq)
        np.sqrt(sq, out=sq)
        out[start:start + blk.shape[0]] = sq
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
        blk = dist.astype(np.float64)
        blk *= self.inv_d
        blk -= (self.g_term[rows] + self.c_min)[:, None]
        blk *= self.scale
        np.clip(blk, 0.0, 1.0, out=blk)
        return blk.astype(np.float32)
