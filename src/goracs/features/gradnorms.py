"""Per-sample gradient norms of a causal LM with LoRA, one forward and one backward per batch.

:class:`GradNormScorer` is the public face of the per-sample scores of a pool: the gradient
norm of each sample's loss for one parameter block (docs/method.md section 2), and from the
same pass, when the response boundaries are given, EL2N and DEALRec influence for the
importance baselines, and the LLM embeddings selection may measure distances with. Each part
lives in the module of its concept:

* :mod:`goracs.features.per_sample`: the loss (whole text or response) and the rebuild of
  per-sample gradients from one backward pass a batch;
* :mod:`goracs.features.blocks`: which parameter block is measured;
* :mod:`goracs.features.direct_route`, with :mod:`~goracs.features.decoder` (calling the
  decoder stack and the head apart), :mod:`~goracs.features.head` (the closed-form
  cross-entropy gradient) and :mod:`~goracs.features.prefix` (the shared prefix run once);
* :mod:`goracs.features.plain_route`: the model's own forward pass, for models the direct
  route does not reproduce;
* :mod:`goracs.features.el2n`, :mod:`goracs.features.influence`,
  :mod:`goracs.features.prompt_embeddings`: the other scores and the LLM embeddings;
* :mod:`goracs.features.batches` (length-sorted batches), :mod:`goracs.features.shards`
  (the resumable pass) and :mod:`goracs.features.cache_keys` (what the cache is keyed by);
* :mod:`goracs.features.scoring_model`: loading the model with its LoRA.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from goracs.errors import GoracsError
from goracs.features import prompt_embeddings, shards
from goracs.features.batches import as_ids, processing_order
from goracs.features.blocks import activate, find_block, linear_block
from goracs.features.cache_keys import prompt_embeddings_key, scores_key
from goracs.features.decoder import SplitDecoder
from goracs.features.direct_route import grads_direct
from goracs.features.plain_route import grads_plain
from goracs.features.prefix import SharedPrefix, common_prefix_length, prepare_prefix
from goracs.io import atomic_save_npy
from goracs.records import response_start, tokenize_texts

#: Which tokens a sample's loss covers: the whole text, or the response alone.
LOSSES = ("text", "response")


@dataclass(frozen=True)
class SampleScores:
    """Per-sample scores of a pool, one float32 entry per sample.

    ``grad_norms`` always; ``el2n`` and ``influence`` when the response boundaries were given
    and scores were asked for (see :mod:`goracs.features.el2n` and
    :mod:`goracs.features.influence` for their definitions), else None; ``embeddings`` (N, d)
    float32, the LLM's mean prompt state, when asked for.
    """

    grad_norms: np.ndarray
    el2n: np.ndarray | None = None
    influence: np.ndarray | None = None
    embeddings: np.ndarray | None = None


def _check_starts(response_starts: Sequence[int], seqs: list[np.ndarray],
                  max_length: int) -> np.ndarray:
    """``response_starts`` as an int64 array; every sample keeps a response token."""
    n = len(seqs)
    starts = np.asarray(response_starts, dtype=np.int64).reshape(-1)
    if starts.shape[0] != n:
        raise GoracsError(f"{starts.shape[0]} response starts for {n} samples")
    for i, (s, q) in enumerate(zip(starts, seqs, strict=True)):
        if s >= len(q):
            raise GoracsError(
                f"sample {i}: max-length {max_length} leaves no response token "
                f"(the prompt takes {s} of its {len(q)} tokens); raise --max-length "
                "or skip EL2N and influence with --no-scores")
        if s < 1:
            raise GoracsError(f"sample {i}: a response cannot start at token {s}")
    return starts


class GradNormScorer:
    """Per-sample gradient norms of one parameter block, one forward and one backward a batch.

    Parameters
    ----------
    model : peft or transformers causal LM
        From :func:`load_scoring_model`. Its parameters' ``requires_grad`` flags are changed:
        only the chosen block keeps a gradient.
    tokenizer : tokenizer
        The model's tokenizer (for :meth:`norms` on texts).
    block : str, optional
        Parameter to measure (see :func:`goracs.features.blocks.find_block`); a weight or
        bias of a linear layer.
    batch_size : int
        Samples per forward/backward pass.
    max_length : int
        Tokens kept per sample (see :func:`goracs.records.tokenize_texts`).
    sort_by_length : bool
        Batch samples of similar length together (less padding).
    share_prefix : bool
        Run the prefix that all samples share once (see :mod:`goracs.features.prefix`).
    identity : dict, optional
        Description of the model (from :func:`load_scoring_model`); needed to cache results.
    shard_batches : int
        Batches per cache shard: the most work an interruption can lose.
    loss : {"text", "response"}
        The tokens each sample's loss covers (see :mod:`goracs.features.per_sample`);
        ``"response"`` needs the response starts in :meth:`scores_from_ids`.

    Attributes
    ----------
    fast : bool
        Whether the direct route is taken (decided when built; False forces the plain one).
    """

    def __init__(self, model: Any, tokenizer: Any, *, block: str | None = None,
                 batch_size: int = 8, max_length: int = 512, sort_by_length: bool = True,
                 share_prefix: bool = True, identity: dict[str, Any] | None = None,
                 shard_batches: int = 8, loss: str = "text") -> None:
        if loss not in LOSSES:
            raise GoracsError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        self.loss = loss
        if batch_size < 1:
            raise GoracsError(f"batch size must be positive, got {batch_size}")
        if shard_batches < 1:
            raise GoracsError(f"shard_batches must be positive, got {shard_batches}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.sort_by_length = bool(sort_by_length)
        self.share_prefix = bool(share_prefix)
        self.identity = identity
        self.shard_batches = int(shard_batches)

        self.block_name = find_block(model, block)
        self.param = dict(model.named_parameters(remove_duplicate=False))[self.block_name]
        self.device = self.param.device
        self._activate()
        self.block = linear_block(model, self.block_name, self.param)
        self.module, self.kind = self.block.module, self.block.kind
        self.lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.pad_id = (tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                       else tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0)
        self.split = SplitDecoder(self.lm, self.module, self.device)
        self.fast = self.split.check()
        self._prefix: SharedPrefix | None = None

    def _activate(self) -> None:
        """Let only the block keep a gradient (again: another scorer on the same model may
        have chosen a different block since)."""
        activate(self.model, self.param)

    @property
    def decoder(self) -> Any:
        """The model's decoder stack (None when the direct route cannot find it)."""
        return self.split.decoder

    @property
    def head(self) -> Any:
        """The model's output head (None when the direct route cannot find it)."""
        return self.split.head

    @property
    def layer_index(self) -> int | None:
        """Index of the decoder layer holding the block; None: no prefix can be shared."""
        return self.split.layer_index

    def _prefix_shared(self) -> bool:
        return bool(self.share_prefix and self.fast and self.layer_index)

    # ---- samples --------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids (int32 arrays) of ``texts`` as the scorer measures them."""
        out: list[np.ndarray] = []
        # In slices, so that a large pool never holds all ids as Python integers at once.
        for s in range(0, len(texts), 4096):
            part = tokenize_texts(self.tokenizer, texts[s:s + 4096], self.max_length)
            out.extend(np.asarray(x, dtype=np.int32) for x in part)
        return out

    def response_starts(self, prompts: Sequence[str], ids: Sequence[Sequence[int]]
                        ) -> np.ndarray:
        """Where each sample's response begins (see :func:`goracs.records.response_start`).

        Parameters
        ----------
        prompts : sequence of str
            Each sample's rendering without its answer
            (``goracs.records.render_prompt(record, with_response=False)``).
        ids : sequence of int sequences
            The same samples' token ids, from :meth:`tokenize` of the full renderings.

        Returns
        -------
        (N,) int64 array; an entry equal to ``len(ids[i])`` marks a response cut off whole.
        """
        if len(prompts) != len(ids):
            raise GoracsError(f"{len(prompts)} prompts for {len(ids)} samples")
        out = np.empty(len(ids), dtype=np.int64)
        for s in range(0, len(prompts), 4096):
            part = self.tokenizer(list(prompts[s:s + 4096]), add_special_tokens=True)
            for k, p in enumerate(part["input_ids"]):
                out[s + k] = response_start(ids[s + k], p)
        return out

    def processing_order(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        """The order in which samples are batched: by length (ties by position) or as given."""
        return processing_order(ids, self.sort_by_length)

    def shared_prefix_length(self, ids: Sequence[Sequence[int]]) -> int:
        """How many leading tokens of ``ids`` run once for the whole set (0: none).

        All but the last token that every sample shares: that one's next token can differ
        per sample, so it stays in the batches.
        """
        if not self._prefix_shared() or len(ids) == 0:
            return 0
        return common_prefix_length(ids)

    # ---- batches --------------------------------------------------------------------------
    def prepare(self, ids: Sequence[Sequence[int]],
                starts: Sequence[int] | None = None) -> None:
        """Set up the work shared by a set of samples (their common prefix); every later
        :meth:`batch_scores` call must take samples of this set (and, under the response
        loss, response starts no earlier than ``starts``' smallest)."""
        self._activate()
        if self.loss == "response" and starts is None:
            raise GoracsError("the response loss needs each sample's response start")
        start = self.shared_prefix_length(ids)
        self._prefix = (None if start == 0 else
                        prepare_prefix(self.split, self.block, ids, start, starts, self.loss))

    def batch_scores(self, seqs: Sequence[Sequence[int]],
                     starts: Sequence[int] | None = None, embed: bool = False
                     ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None,
                                np.ndarray | None]:
        """Scores of one batch of samples of the prepared set.

        Parameters
        ----------
        seqs : sequence of int sequences
            Token ids.
        starts : sequence of int, optional
            Each sample's response start (:meth:`response_starts`), at least 1 and below
            its length; required by the response loss and by ``embed``.
        embed : bool
            Also return each sample's LLM embedding (mean prompt state).

        Returns
        -------
        (norms, el2n, grads, embeddings)
            Gradient norms (B,) float64; with ``starts``, EL2N (B,) float64 and the block
            gradients (B, P) float32, flattened, else None for both; with ``embed`` the
            embeddings (B, d) float32, else None.
        """
        seqs = [as_ids(s) for s in seqs]
        st = None if starts is None else np.asarray(starts, dtype=np.int64)
        if self.loss == "response" and st is None:
            raise GoracsError("the response loss needs each sample's response start")
        self._activate()
        prefix = self._prefix
        if not self.fast:
            grads, el2n, emb = grads_plain(self.model, self.block, seqs, st, embed,
                                           loss=self.loss, pad_id=self.pad_id,
                                           device=self.device)
        else:
            if prefix is not None:
                prefix.check_batch(seqs, st, self.loss)
            grads, el2n, emb = grads_direct(self.split, self.block, seqs, prefix, st, embed,
                                            loss=self.loss, pad_id=self.pad_id)
        flat = grads.flatten(1)
        norms = flat.norm(dim=1).cpu().numpy()
        if st is None:
            return norms, None, None, emb
        return norms, el2n, flat.float().cpu().numpy(), emb

    def batch_norms(self, seqs: Sequence[Sequence[int]],
                    starts: Sequence[int] | None = None) -> np.ndarray:
        """Gradient norms (float64) of one batch of samples of the prepared set."""
        return self.batch_scores(seqs, starts)[0]

    # ---- pools ----------------------------------------------------------------------------
    def cache_key(self, ids: Sequence[Sequence[int]],
                  starts: Sequence[int] | None = None, *, scores: bool = True,
                  embed: bool = False) -> str:
        """Content key of the results for ``ids`` (and response starts, when given), under
        this scorer's loss, with or without the scores and embeddings."""
        return scores_key(ids, starts, identity=self.identity, block=self.block_name,
                          batch_size=self.batch_size, sort_by_length=self.sort_by_length,
                          share_prefix=self._prefix_shared(), fast=self.fast,
                          loss=self.loss, scores=scores, embed=embed)

    def norms(self, texts: Sequence[str], cache_dir: str | os.PathLike | None = None,
              progress: bool = True) -> np.ndarray:
        """Gradient norms of the loss of each text (float32, one per text)."""
        return self.norms_from_ids(self.tokenize(texts), cache_dir=cache_dir, progress=progress)

    def norms_from_ids(self, ids: Sequence[Sequence[int]],
                       cache_dir: str | os.PathLike | None = None,
                       progress: bool = True) -> np.ndarray:
        """Gradient norms for token id sequences (each at least 2 tokens long); see
        :meth:`scores_from_ids`."""
        return self.scores_from_ids(ids, None, cache_dir=cache_dir,
                                    progress=progress).grad_norms

    def scores_from_ids(self, ids: Sequence[Sequence[int]],
                        response_starts: Sequence[int] | None = None,
                        cache_dir: str | os.PathLike | None = None,
                        progress: bool = True, *, scores: bool = True,
                        embed: bool = False,
                        runner: Callable[[shards.ShardPlan, Callable[[int], Any]], None]
                        | None = None) -> SampleScores:
        """Gradient norms, and with ``response_starts`` EL2N and influence, in one pass.

        Parameters
        ----------
        ids : sequence of int sequences
            Token ids of the pool, each at least 2 tokens long.
        response_starts : sequence of int, optional
            From :meth:`response_starts`; every sample must keep at least one response token.
            Required by the response loss and by ``embed``.
        scores : bool
            With ``response_starts``, also EL2N and influence (False: the norms alone).
        embed : bool
            Also each sample's LLM embedding, the mean final hidden state over its prompt
            tokens, from the same forward pass.
        cache_dir : path, optional
            Finished shards (norms, EL2N and the float32 block gradients) are saved as they
            complete and found again on the next call with the same inputs, so an interrupted
            run resumes where it stopped; the final arrays are saved too and the shards
            removed. The gradient shards take 4 * P bytes a sample (P: the block's size,
            1,536 for the default block of SmolLM2) until then.
        progress : bool
            A tqdm bar on stderr.
        runner : callable, optional
            Computes the missing shards elsewhere, each written where this scorer would write
            it (see :func:`goracs.features.shards.score_in_shards`); needs ``cache_dir``.
            :func:`goracs.features.ray_pass.ray_runner` makes one that spreads them over Ray
            actors.
        """
        if len(ids) == 0:
            raise GoracsError("no samples to score")
        seqs = [as_ids(s) for s in ids]
        short = [i for i, s in enumerate(seqs) if len(s) < 2]
        if short:
            raise GoracsError(f"sample {short[0]} has fewer than 2 tokens: nothing to predict")
        if response_starts is None and (self.loss == "response" or embed):
            raise GoracsError("the response loss and LLM embeddings need each sample's "
                              "response start")
        starts = (None if response_starts is None
                  else _check_starts(response_starts, seqs, self.max_length))
        with_scores = starts is not None and scores
        final = parts = None
        if cache_dir is not None:
            key = self.cache_key(seqs, starts, scores=scores, embed=embed)
            final, parts = shards.cache_files(cache_dir, key,
                                              shards.result_names(with_scores, embed))
            got = shards.load_results(final)
            if got is not None:
                return SampleScores(got["gradnorms"], got.get("el2n"), got.get("influence"),
                                    got.get("llmemb"))
        results = shards.score_in_shards(
            seqs, starts, self.processing_order(seqs),
            shard_size=self.batch_size * self.shard_batches, batch_size=self.batch_size,
            prepare=self.prepare, batch_scores=self.batch_scores, with_scores=with_scores,
            embed=embed, parts=parts, progress=progress, runner=runner)
        if final is not None:
            shards.save_results(results, final, parts)
        return SampleScores(results["gradnorms"], results.get("el2n"),
                            results.get("influence"), results.get("llmemb"))

    def embed_prompts(self, ids: Sequence[Sequence[int]], prompt_ends: Sequence[int],
                      cache_dir: str | os.PathLike | None = None,
                      progress: bool = True) -> np.ndarray:
        """LLM embeddings (N, d) float32 of samples that need no gradient, forward only.

        The same vectors :meth:`scores_from_ids` returns with ``embed`` (the mean final hidden
        state over tokens ``0 .. prompt_ends[i] - 1``, through the same route, adapter and
        shared prefix), so pool and validation embeddings share one geometry. Cached by
        content under ``cache_dir`` when given.
        """
        seqs = [as_ids(s) for s in ids]
        ends = prompt_embeddings.check_prompt_ends(seqs, prompt_ends)
        final = None
        if cache_dir is not None:
            key = prompt_embeddings_key(seqs, ends, identity=self.identity,
                                        batch_size=self.batch_size,
                                        share_prefix=self._prefix_shared(), fast=self.fast)
            final = Path(cache_dir) / f"llmemb-valid-{key}.npy"
            if final.is_file():
                return np.load(final, allow_pickle=False)
        out = prompt_embeddings.embed_prompts(
            seqs, ends, self.processing_order(seqs), model=self.model,
            split=self.split if self.fast else None, shared=self.shared_prefix_length(seqs),
            batch_size=self.batch_size, pad_id=self.pad_id, device=self.device,
            progress=progress)
        if final is not None:
            atomic_save_npy(final, out)
        return out
