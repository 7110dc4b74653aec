"""The POO cost matrix on demand, one row block at a time (method.md section 3).

Design of the streaming engine (this module and :mod:`goracs.select.streaming`)
-------------------------------------------------------------------------------
The dense engine holds C (N x V float32). The streaming engine never does: it holds the
inputs and rebuilds any rows of C from them when a stage needs them.

*Computed blockwise.* :class:`CostBlocks` walks the pool in blocks of B rows; each block's
distances come from one float32 GEMM exactly as :func:`goracs.select.cost.pairwise_distances`
computes them, and are scaled by the same :class:`~goracs.select.cost.CostScale`. Its
constants (max D, and the extremes of D/maxD - lambda g/maxg, derived from each row's
smallest and largest distance) come from one pass over the blocks when the object is made.
Every stage that reads the whole pool makes one pass: the row sums and first relaxed gains of
greedy initialisation, the fill costs at saturation, each medoid round's slot costs, each
refinement round's marginal impacts. A pass is :meth:`CostBlocks.map` of a module-level
function of one block and a few small arguments, so that
:class:`goracs.select.remote.RayBlocks` can run the same blocks as Ray tasks (``--ray``).

*Held.* The N-long vectors (row sums, gains, fill costs, impacts, the lazy heaps) and a
compact matrix (:class:`RowStore`) of the rows the transport needs -- the coreset, the swap
or medoid candidates under trial, and a cache of recently used rows -- with a map from pool
index to compact row. The transport kernels index the cost by row id, so they run unchanged
on the compact matrix.

*Exactness.* Cost values are bit-identical to the dense matrix's: the GEMM gives the same
float32 result for a row whatever other rows share its call (a lone row is padded to two, as
BLAS answers a single row by another routine), and everything after it is element-wise.

*Peak memory* (bytes, beside the caller's inputs 4 (N + V) d):

     8 B V                       one block: the float32 GEMM result and the cost rows (the
                                 distances and scaling are one compiled sweep between them)
  + 4 V (2 n + c + 2 + R)        the compact matrix (R = min(2048, N/16) cached rows,
                                 c swap candidates)
  + 40 n V                       exact OT (POT's n x V float64 cost and plan, integer plan)
                                 and the transports' sorted rows (n x V float64 keys, int32)
  + 4 B n                        a medoid round's slot costs for one block
  + ~200 N                       N-long vectors and the Python heap of lazy evaluation

With B = 2048, R = 2048: N = 10^6, V = 5000, d = 384, n = 1024 is about 0.6 GB beyond
the 1.5 GB of inputs, against 20 GB for the dense matrix alone (measured: the whole process,
inputs included, peaks below 3.9 GB; ``benchmarks/select_scale.py``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from goracs.select.cost import (
    _BLOCK_ROWS,
    CostScale,
    _finish_costs,
    _finish_distances,
    check_lambda,
)

# Rows recently computed and kept for re-use, beside the pinned ones: at most this many, and
# at most a sixteenth of the pool.
CACHE_ROWS = 2048


def cache_rows(n_train: int) -> int:
    """R, the cached rows of the compact matrix for a pool of ``n_train`` rows."""
    return min(CACHE_ROWS, max(64, n_train // 16))


class CostBlocks:
    """The scaled cost C of :func:`goracs.select.cost.poo_cost`, computed by rows on demand.

    Parameters
    ----------
    train_emb, valid_emb : (N, d) and (V, d) embeddings.
    grad_norms : (N,) gradient norms; may be None when ``lam`` is 0.
    lam : lambda, the weight of the gradient term.
    block_rows : B, rows per block of a pass over the pool.
    """

    def __init__(self, train_emb: np.ndarray, valid_emb: np.ndarray,
                 grad_norms: np.ndarray | None = None, lam: float = 0.0,
                 block_rows: int = _BLOCK_ROWS) -> None:
        check_lambda(grad_norms, lam)
        self._hold(train_emb, valid_emb, block_rows)
        n = self.train.shape[0]
        row_max = np.empty(n, dtype=np.float32)
        row_min = np.empty(n, dtype=np.float32)
        for start, (hi, lo) in self._extremes():
            row_max[start:start + hi.shape[0]] = hi
            row_min[start:start + lo.shape[0]] = lo
        self.scale: CostScale = CostScale.from_extremes(row_max, row_min, grad_norms, lam)
        self.passes = 1  # passes over the pool so far

    @classmethod
    def from_parts(cls, train: np.ndarray, valid: np.ndarray, scale: CostScale | None,
                   block_rows: int) -> CostBlocks:
        """A cost source from inputs and constants found before, without the pass over the
        pool that finds them (a Ray task rebuilding its blocks: :mod:`goracs.select.remote`).
        With ``scale`` None only :meth:`distance_block` may be used."""
        self = cls.__new__(cls)
        self._hold(train, valid, block_rows)
        if scale is not None:
            self.scale = scale
        self.passes = 0
        return self

    def _hold(self, train: np.ndarray, valid: np.ndarray, block_rows: int) -> None:
        """Keep the inputs (float32, contiguous) and the block size."""
        self.train = np.ascontiguousarray(train, dtype=np.float32)
        self.valid = np.ascontiguousarray(valid, dtype=np.float32)
        self.block_rows = int(block_rows)
        self._valid_t: np.ndarray | None = None  # V^T and the squared norms, made once
        self._valid_sq: np.ndarray | None = None

    def _extremes(self) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray]]]:
        """Each block's first row and its rows' largest and smallest distances."""
        for start in self.starts():
            yield start, _extremes_of(self.distance_block(start))

    def starts(self) -> range:
        """The first row of each block of a pass: the block boundaries every pass keeps."""
        return range(0, self.shape[0], self.block_rows)

    def distance_block(self, start: int) -> np.ndarray:
        """The distances (float32) of the block that begins at row ``start``."""
        blk = self.train[start:start + self.block_rows]
        sq, a_sq = self._products(blk)
        out = np.empty((blk.shape[0], self.shape[1]), dtype=np.float32)
        _finish_distances(sq[:blk.shape[0]], a_sq, self._valid_sq, out)
        return out

    def block(self, start: int) -> np.ndarray:
        """The cost rows (float32) of the block that begins at row ``start``."""
        sl = slice(start, min(self.shape[0], start + self.block_rows))
        return self._costs(self.train[sl], sl)

    @property
    def shape(self) -> tuple[int, int]:
        """(N, V), as the dense matrix's."""
        return self.train.shape[0], self.valid.shape[0]

    def _products(self, blk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The float32 GEMM of the embeddings ``blk`` with the validation set's and their
        squared norms, as :func:`goracs.select.cost.pairwise_distances` computes them: a lone
        row is padded to two (BLAS would answer it by its matrix-vector routine), so both
        results then have two rows. V^T and V's squared norms are made once."""
        if blk.shape[0] == 1:
            blk = np.repeat(blk, 2, axis=0)
        if self._valid_t is None:
            self._valid_t = np.ascontiguousarray(self.valid.T)
            self._valid_sq = np.einsum("ij,ij->i", self.valid, self.valid, dtype=np.float64)
        return blk @ self._valid_t, np.einsum("ij,ij->i", blk, blk, dtype=np.float64)

    def _costs(self, blk: np.ndarray, rows: slice | np.ndarray) -> np.ndarray:
        """Cost rows of the embeddings ``blk`` (training rows ``rows``): the GEMM, then
        distances and scaling in one sweep -- the values of ``normalise`` on the distances."""
        sq, a_sq = self._products(blk)
        offsets = self.scale.offsets(rows)
        if blk.shape[0] == 1:
            offsets = np.repeat(offsets, 2)
        out = np.empty(sq.shape, dtype=np.float32)
        _finish_costs(sq, a_sq, self._valid_sq, self.scale.inv_d, offsets, self.scale.scale,
                      out)
        return out[:blk.shape[0]]

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """The cost rows (len(rows), V) float32 of the training rows ``rows``.

        One GEMM of len(rows) rows, where the blocks run len(block) rows: OpenBLAS may take
        another kernel for a small product, so a row may differ from its block's in the last
        bit. At d = 384 with V = 2,000 or 5,000 every count of rows measured (2-69, 100, 255-257,
        1,000) gave the block's values bit for bit; on small test instances (d = 64, V = 120)
        counts under 134 did not, which is why the engines' tests allow 1e-9 in POO.
        """
        idx = np.asarray(rows, dtype=np.int64)
        if idx.shape[0] == 0:
            return np.empty((0, self.shape[1]), dtype=np.float32)
        return self._costs(self.train[idx], idx)

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """Each block's first row and its cost rows, over the whole pool (one pass)."""
        self.passes += 1
        for start in self.starts():
            yield start, self.block(start)

    def map(self, fn: Callable[..., Any], *args: Any) -> Iterator[tuple[int, Any]]:
        """One pass over the pool: each block's first row and ``fn(start, cost_rows, *args)``,
        in block order.

        ``fn`` depends on its block and ``args`` alone, so a subclass may run the blocks
        elsewhere (:class:`goracs.select.remote.RayBlocks`): it must be a module-level
        function, and ``args`` stay unchanged during the pass.
        """
        for start, blk in self.blocks():
            yield start, fn(start, blk, *args)

    def gather(self, fn: Callable[..., np.ndarray], *args: Any) -> np.ndarray:
        """One pass of :meth:`map` whose ``fn`` gives one value per row of its block: the
        values of every row of the pool, as one float64 vector of length N."""
        out = np.empty(self.shape[0])
        for start, part in self.map(fn, *args):
            out[start:start + part.shape[0]] = part
        return out


def _extremes_of(dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's largest and smallest distance."""
    return dist.max(axis=1), dist.min(axis=1)


class RowStore:
    """A compact matrix of cost rows with a map from pool index to compact row.

    Pinned rows (the coreset, rows under trial) stay where they are; other rows are a cache
    evicted least recently used first. The array never moves, so a transport built on it
    keeps its reference.

    Parameters
    ----------
    blocks : the cost source.
    capacity : compact rows in all.
    """

    def __init__(self, blocks: CostBlocks, capacity: int) -> None:
        self.blocks = blocks
        self.array = np.empty((capacity, blocks.shape[1]), dtype=np.float32)
        self.pool_of = np.full(capacity, -1, dtype=np.int64)
        self._slot: dict[int, int] = {}
        self._free = list(range(capacity - 1, -1, -1))
        self._cache: OrderedDict[int, None] = OrderedDict()  # unpinned rows, oldest first
        self._pinned: set[int] = set()
        self.computed = 0  # rows computed so far

    def slots(self, rows: np.ndarray | list[int], pin: bool = False) -> np.ndarray:
        """Compact rows of the pool rows ``rows``, computing those not held (one GEMM)."""
        rows = [int(r) for r in rows]
        wanted = set(rows)
        for r in rows:  # the rows asked for are the last to be evicted
            if r in self._cache:
                self._cache.move_to_end(r)
        missing = list(dict.fromkeys(r for r in rows if r not in self._slot))
        if missing:
            for _ in range(len(missing) - len(self._free)):
                old = next(iter(self._cache), None)
                if old is None or old in wanted:
                    raise RuntimeError("compact cost matrix full: every row is pinned")
                del self._cache[old]
                self._free.append(self._slot.pop(old))
                self.pool_of[self._free[-1]] = -1
            vals = self.blocks.rows(np.asarray(missing, dtype=np.int64))
            self.computed += len(missing)
            for r, row in zip(missing, vals, strict=True):
                s = self._free.pop()
                self._slot[r] = s
                self.pool_of[s] = r
                self.array[s] = row
                self._cache[r] = None
        if pin:
            for r in rows:
                self._pinned.add(r)
                self._cache.pop(r, None)
        return np.asarray([self._slot[r] for r in rows], dtype=np.int64)

    def pin_only(self, rows: np.ndarray | list[int]) -> None:
        """Pin exactly ``rows`` (held already); every other row becomes cache."""
        keep = {int(r) for r in rows}
        for r in self._pinned - keep:
            self._cache[r] = None
        for r in keep:
            self._cache.pop(r, None)
        self._pinned = keep
