"""The gradient pass on Ray actors: one scoring model per actor, one shard per task.

:func:`ray_runner` makes the ``runner`` of :func:`goracs.features.shards.score_in_shards`:
given the shards still missing, it opens the Ray session ``--ray`` names
(:func:`goracs.cluster.ray_session`), starts as many :class:`ShardWorker` actors as the
cluster holds (``--threads`` CPUs each, or one GPU each on CUDA), and hands each actor the
next missing shard as soon as it finishes one. Each actor computes its shard's batches exactly
as the single-process pass does (same processing order, same batches, the same shared prefix
of the whole pool, the same seeded LoRA) and writes the shard's files itself, atomically and
norms last, into the same parts folder under the same names
(:func:`goracs.features.shards.save_shard`). The driver then reads the shards back and
finishes as a single-process run does (unsorting, influence, the final cache files).

So an interruption of any kind loses at most the shards in flight: a killed actor process is
replaced and its shard computed again (up to :data:`REPLACEMENTS` times a pass); a killed
driver ends its actors, and a rerun, with or without Ray, finds the
finished shards and computes the rest. The actors write into the prepared folder, so on a
cluster of several machines that folder must be on a filesystem every node sees; an actor that
cannot see the parts folder the driver made says so rather than writing elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from goracs.cluster import RaySpec, actor_resources, actors_that_fit, ray_session
from goracs.errors import GoracsError
from goracs.features.shards import ShardPlan, join_batches, save_shard, score_shard

#: Actors that may die (their process killed, out of memory, their node lost) in one pass
#: before it gives up; each is replaced and its shard computed again.
REPLACEMENTS = 2


@dataclass
class RayOptions:
    """How the gradient pass uses Ray.

    Attributes
    ----------
    spec : RaySpec
        The cluster (:func:`goracs.cluster.parse_ray`).
    threads : int, optional
        CPU threads (and Ray CPUs) per actor; None: 1.
    actors : int, optional
        Actors to start; None: as many as the cluster's CPUs (or GPUs) hold at once.
    used : dict
        Filled by the run: the cluster, the actors started, their device and threads, and
        the shards they computed (for the manifest).
    """

    spec: RaySpec
    threads: int | None = None
    actors: int | None = None
    used: dict[str, Any] = field(default_factory=dict)


class ShardWorker:
    """One scoring model inside a Ray actor, computing and saving whole shards.

    Everything is set up in the constructor (model, scorer, the pool's shared prefix), so
    that an actor Ray restarts after its process died is ready again without the driver's
    help.

    Parameters
    ----------
    load : dict
        Keyword arguments of :func:`goracs.features.scoring_model.load_scoring_model` (the
        device included), ``lora`` as a dict of :class:`LoraSettings` fields.
    scorer : dict
        Keyword arguments of :class:`goracs.features.GradNormScorer` (``identity`` aside).
    expected : dict
        What the driver's scorer found: block name, route and shared prefix length; a worker
        that finds otherwise (other model files, another goracs) refuses to score.
    threads : int
        torch's intra-op threads in this actor.
    seqs, starts, order : the pool's token ids, response starts and processing order
    shard_size, batch_size : int
        Samples per shard and per batch, as the driver's pass has them.
    with_scores, embed : bool
        Whether EL2N and gradients, and LLM embeddings, are computed and saved.
    parts : str
        The parts folder the driver made; it must be visible here.
    """

    def __init__(self, load: dict[str, Any], scorer: dict[str, Any], expected: dict[str, Any],
                 threads: int, seqs: Sequence[np.ndarray], starts: np.ndarray | None,
                 order: np.ndarray, shard_size: int, batch_size: int, with_scores: bool,
                 embed: bool, parts: str) -> None:
        import socket

        import torch

        from goracs.features.gradnorms import GradNormScorer
        from goracs.features.scoring_model import LoraSettings, load_scoring_model

        torch.set_num_threads(int(threads))
        self.parts = Path(parts)
        if not self.parts.is_dir():
            raise GoracsError(f"{parts} is not visible on Ray node {socket.gethostname()}; "
                              "the prepared folder must be on a filesystem every node shares")
        load = dict(load)
        lora = load.pop("lora")
        lora = LoraSettings(**{**lora, "targets": tuple(lora["targets"])})
        model, tokenizer, identity = load_scoring_model(lora=lora, **load)
        self.scorer = GradNormScorer(model, tokenizer, identity=identity, **scorer)
        found = describe(self.scorer, seqs)
        if found != expected:
            raise GoracsError(f"a Ray worker's scoring model differs from the driver's "
                              f"({found} against {expected}); give every node the same "
                              "goracs, model files and settings")
        self.seqs, self.starts, self.order = seqs, starts, order
        self.shard_size, self.batch_size = int(shard_size), int(batch_size)
        self.with_scores, self.embed = bool(with_scores), bool(embed)
        self.scorer.prepare(seqs, starts)

    def shard(self, k: int) -> int:
        """Compute shard ``k`` and write its files; return its number of samples."""
        sizes, out = zip(*score_shard(self.seqs, self.starts, self.order, k, self.shard_size,
                                      self.batch_size, self.scorer.batch_scores, self.embed),
                         strict=True)
        save_shard(self.parts, k, *join_batches(list(out), self.with_scores, self.embed))
        return sum(sizes)


def describe(scorer: Any, seqs: Sequence[np.ndarray]) -> dict[str, Any]:
    """What must agree between the driver's scorer and a worker's.

    The file fingerprints of the model identity are left out: those of large weight files
    rest on modification times, which differ between machines holding the same files.
    """
    return {"block": scorer.block_name, "size": int(scorer.param.numel()),
            "fast": bool(scorer.fast), "shared_prefix": int(scorer.shared_prefix_length(seqs)),
            "dtype": str(scorer.param.dtype)}


def ray_runner(options: RayOptions, load: dict[str, Any], scorer: dict[str, Any],
               expected: Callable[[Sequence[np.ndarray]], dict[str, Any]],
               log: Callable[[str], None] | None = None
               ) -> Callable[[ShardPlan, Callable[[int], Any]], None]:
    """A ``runner`` for :func:`goracs.features.shards.score_in_shards` that computes the
    missing shards on Ray actors.

    Parameters
    ----------
    options : RayOptions
        The cluster, threads and actors; ``options.used`` is filled in.
    load : dict
        :func:`load_scoring_model` keyword arguments as the driver's were, ``lora`` as a dict
        (r, alpha, targets, seed) and ``device`` as asked for (``cuda`` gives each actor a
        GPU; ``auto`` does when the cluster has any).
    scorer : dict
        :class:`GradNormScorer` keyword arguments but ``identity``.
    expected : callable
        ``expected(seqs)``: :func:`describe` of the driver's scorer for the pool.
    log : callable, optional
        Takes one-line messages.

    Returns
    -------
    callable
        ``runner(plan, advance)``; starts Ray only when called, i.e. only when shards are
        missing.
    """

    def run(plan: ShardPlan, advance: Callable[[int], Any]) -> None:
        with ray_session(options.spec, log) as ray:
            _run_on(ray, plan, advance, options, load, scorer, expected(plan.seqs))

    return run


def _run_on(ray: Any, plan: ShardPlan, advance: Callable[[int], Any], options: RayOptions,
            load: dict[str, Any], scorer: dict[str, Any], expected: dict[str, Any]) -> None:
    """Start the actors, feed them the missing shards one at a time, wait for all."""
    device = load.get("device", "cpu")
    gpu = device.startswith("cuda") or (device == "auto"
                                        and ray.cluster_resources().get("GPU", 0) > 0)
    resources = actor_resources(options.threads, gpu)
    n_actors = min(actors_that_fit(ray, resources, options.actors), len(plan.missing))
    threads = int(options.threads or 1)
    # Ray makes the GPU it gives an actor that actor's only (and so first) CUDA device.
    worker_load = {**load, "device": "cuda" if gpu else "cpu"}
    # Ray's own actor restarts (max_restarts) are not used: Ray warns at every such actor
    # whose constructor arguments sit in the object store (the pool does) that a restart may
    # fail; a dead actor is replaced here instead, with its shard handed to the next one.
    remote = ray.remote(**resources)(ShardWorker)
    pool = ray.put(list(plan.seqs))
    args = (worker_load, scorer, expected, threads, pool, plan.starts, plan.order,
            plan.shard_size, plan.batch_size, plan.with_scores, plan.embed,
            str(plan.parts))
    actors = [remote.remote(*args) for _ in range(n_actors)]
    options.used.update(cluster=options.spec.text, actors=n_actors, threads_per_actor=threads,
                        device=worker_load["device"], shards=len(plan.missing))
    todo = list(plan.missing)
    running: dict[Any, tuple[Any, int]] = {}
    replacements = REPLACEMENTS

    def feed(actor: Any) -> None:
        if todo:
            k = todo.pop(0)
            running[actor.shard.remote(k)] = (actor, k)

    for actor in actors:
        feed(actor)
    try:
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            actor, k = running.pop(ready[0])
            try:
                advance(ray.get(ready[0]))
            except ray.exceptions.RayActorError as exc:
                # A process that died (killed, out of memory, its node lost) is replaced;
                # an actor whose set-up failed is not: a new one would fail alike.
                if exc.actor_init_failed or replacements == 0:
                    raise _one_line(exc, k) from None
                replacements -= 1
                todo.insert(0, k)
                actor = remote.remote(*args)
                actors.append(actor)
            except Exception as exc:
                raise _one_line(exc, k) from None
            feed(actor)
    finally:
        for actor in actors:
            ray.kill(actor)


def _one_line(exc: BaseException, k: int) -> GoracsError:
    """A Ray failure as the one-line error the command reports."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, GoracsError):
        return GoracsError(str(cause))
    text = str(cause if cause is not None else exc).strip()
    for line in text.splitlines():
        if "GoracsError:" in line:
            return GoracsError(line.split("GoracsError:", 1)[1].strip())
    first = text.splitlines()[0] if text else ""
    return GoracsError(f"the Ray actor computing shard {k} failed ({type(exc).__name__}: "
                       f"{first}); the shards already written are kept, rerun to resume")
