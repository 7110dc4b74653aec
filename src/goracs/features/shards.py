"""The sharded, resumable pass over a pool: batches grouped into shards, saved as they
complete, found again after an interruption.

Under a cache folder, a pool whose content key is K (:mod:`goracs.features.cache_keys`) keeps
its finished arrays as ``{name}-K.npy`` (``gradnorms``, ``el2n``, ``influence``,
``llmemb``), and while it runs its shards in ``gradnorms-K.parts/``: per shard k,
``grad-k.npy`` (the float32 block gradients), ``el2n-k.npy``, ``llmemb-k.npy`` and last
``shard-k.npy`` (the norms), whose presence marks the shard complete. Shards hold samples in
processing order; the results are put back into pool order at the end.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from goracs.cache import load_parts
from goracs.errors import GoracsError
from goracs.features.batches import unsort, unsort_rows
from goracs.features.influence import influence
from goracs.io import atomic_save_npy

#: What each result is called in messages.
LABELS = {"gradnorms": "gradient norms", "el2n": "EL2N scores",
          "influence": "influence scores", "llmemb": "LLM embeddings"}

#: One batch's results: norms, EL2N, flattened gradients, embeddings (see
#: :meth:`goracs.features.GradNormScorer.batch_scores`).
BatchResult = tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]


def result_names(with_scores: bool, embed: bool) -> list[str]:
    """The results a pass yields: the norms, maybe EL2N and influence, maybe embeddings."""
    return (["gradnorms"] + (["el2n", "influence"] if with_scores else [])
            + (["llmemb"] if embed else []))


def cache_files(cache_dir: str | Path, key: str,
                names: Sequence[str]) -> tuple[dict[str, Path], Path]:
    """The final file of each result under ``cache_dir`` and the folder of the shards."""
    final = {k: Path(cache_dir) / f"{k}-{key}.npy" for k in names}
    return final, Path(cache_dir) / f"gradnorms-{key}.parts"


def load_results(final: dict[str, Path]) -> dict[str, np.ndarray] | None:
    """The finished results, when every final file is there; None otherwise."""
    if not all(f.is_file() for f in final.values()):
        return None
    return {k: np.load(f, allow_pickle=False) for k, f in final.items()}


def grad_parts(parts: Path | None, sizes: Sequence[int]) -> list[np.ndarray | Path | None]:
    """The gradient shards an interrupted run left, as paths (memory-mapped to check their
    shape, never read whole here); None for the missing or malformed ones."""
    found: list[np.ndarray | Path | None] = [None] * len(sizes)
    if parts is None:
        return found
    for k, size in enumerate(sizes):
        f = parts / f"grad-{k:05d}.npy"
        if not f.is_file():
            continue
        try:
            arr = np.load(f, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            continue
        if arr.ndim == 2 and arr.shape[0] == size:
            found[k] = f
    return found


class _Shards:
    """Per shard, what is known so far: norms, EL2N, gradients (an array or the file that
    holds it) and embeddings; None where missing. A shard counts as done when it has every
    piece the pass needs."""

    def __init__(self, parts: Path | None, sizes: list[int], with_scores: bool,
                 embed: bool) -> None:
        self.norms = load_parts(parts, "shard", sizes, ndim=1)
        self.errs: list[np.ndarray | None] = [None] * len(sizes)
        self.embs: list[np.ndarray | None] = [None] * len(sizes)
        # Gradient shards stay on disk when there is a cache (they can be large) and are
        # read back one at a time for the influence pass.
        self.grads: list[np.ndarray | Path | None] = [None] * len(sizes)
        if with_scores:
            self.errs = load_parts(parts, "el2n", sizes, ndim=1)
            self.grads = grad_parts(parts, sizes)
            self.norms = [f if e is not None and g is not None else None
                          for f, e, g in zip(self.norms, self.errs, self.grads, strict=True)]
        if embed:
            self.embs = load_parts(parts, "llmemb", sizes, ndim=2)
            self.norms = [f if e is not None else None
                          for f, e in zip(self.norms, self.embs, strict=True)]

    def done(self) -> int:
        return sum(a.shape[0] for a in self.norms if a is not None)

    def keep(self, k: int, out: list[BatchResult], parts: Path | None, with_scores: bool,
             embed: bool) -> None:
        """Record shard ``k`` from its batches' results, saving it under ``parts`` if given."""
        norms, errs, grads, embs = join_batches(out, with_scores, embed)
        self.errs[k], self.grads[k], self.embs[k] = errs, grads, embs
        if parts is not None:
            save_shard(parts, k, norms, errs, grads, embs)
            if with_scores:
                self.grads[k] = parts / f"grad-{k:05d}.npy"
        self.norms[k] = norms


def join_batches(out: list[BatchResult], with_scores: bool, embed: bool
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None,
                            np.ndarray | None]:
    """One shard's norms, EL2N, gradients and embeddings from its batches' results (None for
    what the pass does not compute)."""
    norms = np.concatenate([o[0] for o in out])
    errs = np.concatenate([o[1] for o in out]) if with_scores else None
    grads = np.concatenate([o[2] for o in out]) if with_scores else None
    embs = np.concatenate([o[3] for o in out]) if embed else None
    return norms, errs, grads, embs


def save_shard(parts: Path, k: int, norms: np.ndarray, errs: np.ndarray | None,
               grads: np.ndarray | None, embs: np.ndarray | None) -> None:
    """Write shard ``k`` under ``parts``, each file atomically and the norms last: their
    presence marks the shard complete, so an interruption leaves it whole or missing."""
    if grads is not None:
        atomic_save_npy(parts / f"grad-{k:05d}.npy", grads)
    if errs is not None:
        atomic_save_npy(parts / f"el2n-{k:05d}.npy", errs)
    if embs is not None:
        atomic_save_npy(parts / f"llmemb-{k:05d}.npy", embs)
    atomic_save_npy(parts / f"shard-{k:05d}.npy", norms)


def score_shard(seqs: Sequence[np.ndarray], starts: np.ndarray | None, order: np.ndarray,
                k: int, shard_size: int, batch_size: int,
                batch_scores: Callable[..., BatchResult], embed: bool
                ) -> Iterator[tuple[int, BatchResult]]:
    """Score shard ``k`` batch by batch: each batch's number of samples and its results
    (the same batches, in the same order, in this process and on a Ray actor)."""
    idx = order[k * shard_size:(k + 1) * shard_size]  # the shard's pool positions
    for b in range(0, len(idx), batch_size):
        part = idx[b:b + batch_size]
        st = None if starts is None else starts[part]
        batch = [seqs[i] for i in part]
        yield len(part), (batch_scores(batch, st, embed=True) if embed
                          else batch_scores(batch, st))


@dataclass(frozen=True)
class ShardPlan:
    """What an outside runner of the pass (:func:`score_in_shards`'s ``runner``) is handed:
    the pool, its processing order and sharding, what to compute, where the shards go and
    which are still missing."""

    seqs: Sequence[np.ndarray]
    starts: np.ndarray | None
    order: np.ndarray
    shard_size: int
    batch_size: int
    with_scores: bool
    embed: bool
    parts: Path
    missing: list[int]
    sizes: list[int]


def score_in_shards(seqs: Sequence[np.ndarray], starts: np.ndarray | None, order: np.ndarray,
                    *, shard_size: int, batch_size: int, prepare: Callable[..., None],
                    batch_scores: Callable[..., BatchResult], with_scores: bool, embed: bool,
                    parts: Path | None, progress: bool = True,
                    runner: Callable[[ShardPlan, Callable[[int], Any]], None] | None = None
                    ) -> dict[str, np.ndarray]:
    """Score a pool shard by shard, resuming from the shards under ``parts``.

    Parameters
    ----------
    seqs, starts : token ids and response starts (or None) of the pool
    order : the processing order
    shard_size, batch_size : samples per shard and per batch
    prepare : called as ``prepare(seqs, starts)`` before the first batch that is computed
    batch_scores : called as ``batch_scores(seqs, starts)`` (``embed=True`` added with
        ``embed``) for every batch still missing, returning a :data:`BatchResult`
    with_scores, embed : whether EL2N and influence, and embeddings, are computed
    parts : folder of the shards (None: nothing saved)
    progress : a tqdm bar on stderr
    runner : computes the missing shards elsewhere (on Ray actors, say), called as
        ``runner(plan, advance)`` with a :class:`ShardPlan` and a callable that moves the
        progress bar by a number of samples; it must leave every shard of ``plan.missing``
        under ``plan.parts`` as :func:`save_shard` writes them, which are then read back
        (``prepare`` and ``batch_scores`` are not called). Needs ``parts``.

    Returns
    -------
    dict of result name (:func:`result_names`) -> array in pool order, float32, checked
    finite.
    """
    from tqdm import tqdm

    n = len(seqs)
    bounds = list(range(0, n, shard_size))
    sizes = [min(shard_size, n - s) for s in bounds]
    state = _Shards(parts, sizes, with_scores, embed)
    done = state.done()
    bar = tqdm(total=n, initial=done, desc="gradient scores" if with_scores
               else "gradient norms", unit="sample", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    with bar:
        if done < n and runner is not None:
            if parts is None:
                raise GoracsError("an outside runner of the pass needs a cache folder")
            parts.mkdir(parents=True, exist_ok=True)
            missing = [k for k, a in enumerate(state.norms) if a is None]
            runner(ShardPlan(seqs, starts, order, shard_size, batch_size, with_scores, embed,
                             parts, missing, sizes), bar.update)
            state = _Shards(parts, sizes, with_scores, embed)
            if state.done() < n:
                raise GoracsError(f"{parts}: {n - state.done()} samples' shards are missing "
                                  "after the pass; rerun to complete them")
        elif done < n:
            prepare(seqs, starts)
        for k in range(len(bounds)):
            if state.norms[k] is not None:
                continue
            out: list[BatchResult] = []
            for size, got in score_shard(seqs, starts, order, k, shard_size, batch_size,
                                         batch_scores, embed):
                out.append(got)
                bar.update(size)
            state.keep(k, out, parts, with_scores, embed)
    results = {"gradnorms": unsort(state.norms, order)}
    if with_scores:
        results["el2n"] = unsort(state.errs, order)
        results["influence"] = unsort(influence(state.grads, n), order)
    if embed:
        results["llmemb"] = unsort_rows(state.embs, order)
    for name, arr in results.items():
        if not np.isfinite(arr).all():
            raise GoracsError(f"{LABELS[name]} contain NaN or inf (try --dtype fp32)")
    return results


def save_results(results: dict[str, Any], final: dict[str, Path], parts: Path) -> None:
    """Save the finished arrays and remove the shards."""
    for name, arr in results.items():
        atomic_save_npy(final[name], arr)
    shutil.rmtree(parts, ignore_errors=True)
