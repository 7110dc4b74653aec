"""The streaming engine's passes over the pool as Ray tasks (``--ray``, ``GORACS(ray=...)``).

Every pass of the streaming engine (:mod:`goracs.select.streaming`) -- the extremes that fix
the cost's scale, greedy's row sums and first gains, the fill costs past saturation, each
medoid round's pricing, each refinement round's marginal impacts -- computes, for each block of
cost rows, a result that depends on that block and on a few small arguments alone
(:meth:`goracs.select.cost_blocks.CostBlocks.map`). :class:`RayBlocks` runs those blocks as Ray
tasks:

- the embeddings and the cost constants (which hold the scaled gradient norms) are put into
  Ray's object store once per subproblem (``ray.put``); a pass's own arguments (a column
  vector, the coreset's rows, the plan's column lists) once per pass;
- a pass is cut into at most :data:`TASKS_PER_CPU` tasks per cluster CPU, each a run of
  consecutive blocks with the local engine's block boundaries; a task rebuilds each of its
  blocks' cost rows exactly as the local pass does (the same float32 GEMM on the same rows,
  the same scaling) and returns the pass's per-block result;
- the driver takes the results back in block order, so everything after a pass (heaps, folds,
  picks) is the local engine's code on the same numbers: the same indices and POO.

Everything else -- the exact transports, the swaps, the rows of the compact matrix -- stays in
the driver, which holds the inputs anyway. Tasks are pure, so Ray's own retry of a task whose
worker died is safe.

*Exactness across machines.* A cost row is the same whatever other rows share its GEMM on one
machine (:mod:`goracs.select.cost_blocks`); a cluster whose nodes run another BLAS build or
CPU kernel may round the GEMM differently in its last bit, and then a tie can break
differently. On one machine (``local:N``) and on a cluster of identical nodes the results are
bit-identical.

*Memory.* Beside the streaming engine's own (:mod:`goracs.select.cost_blocks`), Ray's object
store holds a copy of the inputs, 4 (N + V) d bytes, and of the scaled gradient norms, 8 N; a
task holds one block's temporaries (8 B V bytes) and its results while they wait there.
:func:`goracs.select.memory.choose_engine` does not count the object store.

Ray is imported by :func:`ray_pool` only, through :func:`goracs.cluster.ray_session`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from goracs.cluster import RaySpec, ray_session
from goracs.select.cost import _BLOCK_ROWS
from goracs.select.cost_blocks import CostBlocks, _extremes_of

#: Tasks per pass at most, per CPU of the cluster: a few per CPU even out blocks of uneven
#: speed (a busy node) without paying Ray's per-task overhead on every block.
TASKS_PER_CPU = 4


@dataclass
class RayPool:
    """The Ray session a selection's passes run in.

    Attributes
    ----------
    ray : the ``ray`` module, initialised.
    spec : the ``--ray`` value it came from.
    cpus : CPUs of the cluster when the selection began.
    session : "started" (a local Ray of this run), "joined" (a cluster) or "existing" (a Ray
        this process had initialised before, lent to the selection and left running).
    tasks : tasks submitted so far.
    passes : passes over the pool run on Ray so far.
    """

    ray: Any
    spec: RaySpec
    cpus: int
    session: str
    tasks: int = 0
    passes: int = 0
    _remote: Any = None

    @property
    def run_blocks(self) -> Any:
        """:func:`_run_blocks` as a Ray remote function of one CPU (made once per pool)."""
        if self._remote is None:
            self._remote = self.ray.remote(num_cpus=1)(_run_blocks)
        return self._remote

    def info(self) -> dict[str, Any]:
        """What ``selection.json`` records under ``"ray"``."""
        return {"address": self.spec.text, "session": self.session, "cpus": self.cpus,
                "passes": self.passes, "tasks": self.tasks}


@contextlib.contextmanager
def ray_pool(spec: RaySpec) -> Iterator[RayPool]:
    """The Ray session of a selection: the one this process already holds, else the one
    ``spec`` names (started or joined, and left at the end, by
    :func:`goracs.cluster.ray_session`).

    A process that initialised Ray itself (a notebook, a test, a driver of several runs) lends
    that session instead: :func:`~goracs.cluster.ray_session` refuses a second ``ray.init``,
    and starting a Ray per selection would cost seconds each time. The selection then neither
    starts nor stops Ray.
    """
    held = sys.modules.get("ray")
    if held is not None and held.is_initialized():
        yield RayPool(held, spec, _cpus(held), "existing")
        return
    with ray_session(spec) as ray:
        yield RayPool(ray, spec, _cpus(ray), "started" if spec.local else "joined")


def _cpus(ray: Any) -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _run_blocks(train: np.ndarray, valid: np.ndarray, scale: Any, block_rows: int,
                starts: list[int], fn: Callable[..., Any] | None, args: tuple
                ) -> list[Any]:
    """One task: the pass ``fn(start, cost_rows, *args)`` on the blocks beginning at
    ``starts``, rebuilt from the inputs as :class:`CostBlocks` builds them. With ``fn`` None
    (the first pass, before the scale is known) each block's distance extremes.

    Ray gives a task of one CPU one OpenMP/BLAS thread but leaves numba's pool at every core of
    the node; the kernels are told to use one thread too, so that a node's tasks do not
    oversubscribe its cores. Per-row results do not depend on the thread count.
    """
    numba.set_num_threads(1)
    blocks = CostBlocks.from_parts(train, valid, scale, block_rows)
    if fn is None:
        return [_extremes_of(blocks.distance_block(s)) for s in starts]
    return [fn(s, blocks.block(s), *args) for s in starts]


class RayBlocks(CostBlocks):
    """:class:`CostBlocks` whose passes (:meth:`map`) run as Ray tasks of ``pool``.

    Single rows (:meth:`rows`, for the compact matrix) are still computed here.

    Parameters
    ----------
    pool : the Ray session.
    train_emb, valid_emb, grad_norms, lam, block_rows : as :class:`CostBlocks`.
    """

    def __init__(self, pool: RayPool, train_emb: np.ndarray, valid_emb: np.ndarray,
                 grad_norms: np.ndarray | None = None, lam: float = 0.0,
                 block_rows: int = _BLOCK_ROWS) -> None:
        self.pool = pool
        self._scale_ref: Any = None
        self._inputs: tuple[Any, Any] | None = None
        super().__init__(train_emb, valid_emb, grad_norms, lam, block_rows)

    def _refs(self) -> tuple[Any, Any]:
        if self._inputs is None:  # once: the first pass, inside CostBlocks.__init__
            ray = self.pool.ray
            self._inputs = (ray.put(self.train), ray.put(self.valid))
        return self._inputs

    def _submit(self, fn: Callable[..., Any] | None, args: tuple) -> Iterator[tuple[int, Any]]:
        """Run one pass on Ray; yield each block's first row and result, in block order."""
        ray = self.pool.ray
        train, valid = self._refs()
        scale = None
        if fn is not None:
            if self._scale_ref is None:
                self._scale_ref = ray.put(self.scale)
            scale = self._scale_ref
        starts = list(self.starts())
        n_tasks = max(1, min(len(starts), TASKS_PER_CPU * self.pool.cpus))
        runs = [run.tolist() for run in np.array_split(np.asarray(starts), n_tasks)]
        args_ref = ray.put(args)
        futures = [self.pool.run_blocks.remote(train, valid, scale, self.block_rows, run, fn,
                                               args_ref)
                   for run in runs]
        self.pool.tasks += len(futures)
        self.pool.passes += 1
        try:
            for run, fut in zip(runs, futures, strict=True):
                yield from zip(run, ray.get(fut), strict=True)
        except BaseException:  # a pass abandoned half-way leaves no work behind
            for fut in futures:
                with contextlib.suppress(Exception):
                    ray.cancel(fut)
            raise

    def _extremes(self) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray]]]:
        yield from self._submit(None, ())

    def map(self, fn: Callable[..., Any], *args: Any) -> Iterator[tuple[int, Any]]:
        """:meth:`CostBlocks.map` as Ray tasks: the same results, block by block."""
        self.passes += 1
        yield from self._submit(fn, args)
