"""Per-sample gradient norms of a causal LM with LoRA, one forward and one backward per batch.

For a sample with tokens x_0 ... x_{n-1} the loss is the mean token cross-entropy of the
whole rendered text, L = (1/(n-1)) sum_t CE(x_{t+1} | x_<=t), and the score is ||dL/dW||_2
for one parameter block W (method.md section 2; default: the LoRA B matrix of ``v_proj`` in
the last decoder layer). When W is the weight of a linear map y = W a, the gradient of a
sample is sum_t g_t a_t^T, with a_t the map's input and g_t = dL/dy_t at position t. The
losses of the samples of a batch are summed, never averaged across samples, so one backward
pass yields every g_t of every sample at once; a forward hook keeps a_t and the map's output,
and the per-sample gradients are rebuilt from the two. Only W requires a gradient, so the
backward pass stops at W's layer.

Two savings on top of batching, both exact up to float rounding:

* Batches are formed from samples of similar length, so little compute goes to padding.
* Every sample starts with the same tokens (the Alpaca preamble and, within a task, the same
  instruction). The layers below W's layer see the same values there for every sample, so
  they run on that shared prefix once per run and the batches continue from its key/value
  cache. The prefix's own next-token losses are also the same for every sample; their
  gradient G_pre is computed once and added as G_pre / (n-1) to each sample's gradient.

The fast route calls the decoder stack and the output head directly; the gradient of the
cross-entropy with respect to the logits is formed in closed form, chunk by chunk, which is
also closer to float64 than autograd through a float32 log-softmax (measured: 1e-6 against
6e-5 relative on ML-1M samples). The route is checked against the model's own forward pass
on a short input when the scorer is built; a model that does not pass (an unusual head,
logit soft-capping) is scored through its plain forward pass instead, with the same
one-backward-per-batch gradients but no prefix sharing.

Two more per-sample scores come out of the same pass when the response boundaries are given
(:meth:`GradNormScorer.scores_from_ids`), for the importance baselines:

* **EL2N** (Paul et al., NeurIPS 2021) adapted to a causal LM: the mean, over the sample's
  response tokens (everything after ``### Response:``, end-of-sequence included, as far as
  ``max_length`` keeps them), of ||softmax(z_t) - onehot(y_t)||_2, with z_t the logits that
  predict response token y_t under the scoring model. The direct route reads it off the
  exp(z - max) rows it forms anyway for the gradient; the plain route from the model's logits.
* **Influence** (DEALRec, Lin et al., SIGIR 2024): the first-order growth of the empirical
  risk when sample s is removed, I(s) = (1/N) gbar^T H^{-1} g_s, with the scoring LLM as its
  own surrogate, g_s the block gradient whose norm is the gradient norm, gbar the mean of g_s
  over the pool and H taken as the identity. Each g_s is kept (float32) in the cache shards,
  so one pass over the pool suffices and an interrupted run resumes; I = G gbar / N at the end.

**Which tokens the loss covers** (``loss``): ``"text"``, every token after the first, as
above; or ``"response"``, the mean cross-entropy of the response tokens alone (the prompt
masked, as answer-only fine-tuning optimises it; docs/method.md section 2 takes CTR gradients
this way). With ``"response"`` only the response rows enter the head's backward pass; the
prompt positions still receive gradient through attention, and the shared prefix is cut short
of every sample's response, so no loss row falls inside it and G_pre is not added.

**LLM embeddings** ride along on request: the mean of the final hidden state (after the last
norm) over each sample's prompt tokens, read off the forward pass the gradients already take,
so that selection can measure distances in the geometry of the model being fine-tuned.
:meth:`GradNormScorer.embed_prompts` gives the same vectors for samples that need no gradient
(the validation set), in a forward pass alone.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from goracs.cache import content_key, load_parts, path_fingerprint
from goracs.errors import GoracsError
from goracs.io import atomic_save_npy
from goracs.models import resolve_llm
from goracs.records import response_start, tokenize_texts

# Shorter shared prefixes save less than the bookkeeping costs.
MIN_SHARED_TOKENS = 4
# Rows of the output head handled at once: bounds the (rows x vocabulary) logits buffer.
HEAD_CHUNK = 1024
# Version of the cached arrays' layout and definitions; part of every cache key.
CACHE_VERSION = 2
#: Which tokens a sample's loss covers: the whole text, or the response alone.
LOSSES = ("text", "response")


@dataclass(frozen=True)
class SampleScores:
    """Per-sample scores of a pool, one float32 entry per sample.

    ``grad_norms`` always; ``el2n`` and ``influence`` when the response boundaries were given
    and scores were asked for (see the module docstring for their definitions), else None;
    ``embeddings`` (N, d) float32, the LLM's mean prompt state, when asked for.
    """

    grad_norms: np.ndarray
    el2n: np.ndarray | None = None
    influence: np.ndarray | None = None
    embeddings: np.ndarray | None = None


@dataclass(frozen=True)
class LoraSettings:
    """The LoRA put on the model when no warm-start adapter is given (dropout is always 0)."""

    r: int = 8
    alpha: int = 16
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    seed: int = 0


def load_scoring_model(
    model: str | None = None,
    adapter: str | os.PathLike | None = None,
    *,
    lora: LoraSettings = LoraSettings(),
    dtype: str = "fp32",
    device: str = "cpu",
) -> tuple[Any, Any, dict[str, Any]]:
    """Load a causal LM with a LoRA adapter, ready for :class:`GradNormScorer`.

    Parameters
    ----------
    model : str, optional
        ``None`` or ``"smollm2-135m-instruct"`` for the packaged SmolLM2 (converted once and
        cached), a local folder, or a hub id.
    adapter : path, optional
        A peft LoRA adapter folder to warm-start from; ``lora`` is then ignored.
    lora : LoraSettings
        Rank, alpha, target modules and the seed of the random LoRA A initialisation (B starts
        at zero, as peft initialises it, so norms depend on A through the seed).
    dtype : {"fp32", "bf16"}
        Precision of the base model's weights and activations.
    device : str
        ``"cpu"``, ``"cuda[:N]"`` or ``"auto"`` (a GPU when there is one).

    Returns
    -------
    (peft_model, tokenizer, identity)
        ``identity`` describes the loaded model for cache keys and manifests.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from goracs.lm import add_lora, attach_adapter, check_adapter_dir, pick_device, torch_dtype

    dtype_ = torch_dtype(dtype)
    device = pick_device(device)
    if lora.r < 1 or lora.alpha <= 0 or not lora.targets:
        raise GoracsError(f"invalid LoRA settings: r={lora.r}, alpha={lora.alpha}, "
                          f"targets={list(lora.targets)}")
    path = resolve_llm(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype_).to(device)
    except Exception as exc:  # hub, file and config errors come in many types
        raise GoracsError(f"cannot load model {path}: {type(exc).__name__}: {exc}") from None
    identity: dict[str, Any] = {"model": path, "model_files": path_fingerprint(path),
                                "dtype": dtype}
    if adapter is not None:
        torch.manual_seed(lora.seed)  # the global generator's state does not depend on the route
        apath = check_adapter_dir(adapter)
        peft_model = attach_adapter(lm, apath, trainable=False)
        identity.update(adapter=str(apath), adapter_files=path_fingerprint(apath))
    else:
        peft_model = add_lora(lm, r=lora.r, alpha=lora.alpha, dropout=0.0, targets=lora.targets,
                              seed=lora.seed, name=path)
        identity.update(adapter=None, lora={**asdict(lora), "targets": list(lora.targets)})
    peft_model.eval()
    return peft_model, tokenizer, identity


def _as_ids(seq: Sequence[int]) -> np.ndarray:
    return np.asarray(seq, dtype=np.int32).reshape(-1)


def _error_norms(e: Any, targets: Any) -> Any:
    """||softmax(z) - onehot(y)||_2 of each row, from e = exp(z - max z) (float64 result).

    Written as sqrt(sum_{k != y} p_k^2 + (1 - p_y)^2) with 1 - p_y = sum_{k != y} e_k / sum e:
    every term is non-negative, so a confident right answer (p_y near 1) loses no digits to
    the cancellation that sum p^2 - 2 p_y + 1 suffers.
    """
    import torch

    e = e.double()  # a copy: the caller's buffer stays intact
    rows = torch.arange(e.shape[0], device=e.device)
    e_y = e[rows, targets].clone()
    e[rows, targets] = 0
    rest = e.sum(dim=1)
    return torch.sqrt((e * e).sum(dim=1) + rest * rest) / (rest + e_y)


def _ids_digest(ids: Sequence[Sequence[int]]) -> str:
    import hashlib

    h = hashlib.sha256(str(len(ids)).encode())
    for seq in ids:
        arr = np.asarray(seq, dtype=np.int64)
        h.update(arr.shape[0].to_bytes(8, "little"))
        h.update(arr.tobytes())
    return h.hexdigest()


def _default_block(names: list[str]) -> str:
    import re

    best: tuple[int, str] | None = None
    for name in names:
        m = re.search(r"\.(\d+)\.self_attn\.v_proj\.lora_B\.[^.]+\.weight$", name)
        if m and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), name)
    if best is None:
        raise GoracsError("the model has no LoRA on v_proj; name a block with --block")
    return best[1]


def find_block(model: Any, block: str | None) -> str:
    """The full parameter name for ``block``: a full name or a dotted suffix of exactly one,
    e.g. ``layers.29.self_attn.v_proj.lora_B.default.weight``; ``None`` for the LoRA B matrix
    of ``v_proj`` in the last decoder layer."""
    # Tied weights appear once under each name, so that either name finds them.
    names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    if block is None:
        return _default_block(names)
    hits = [n for n in names if n == block or n.endswith("." + block)]
    if len(hits) != 1:
        lora = [n for n in names if ".lora_B." in n][-2:]
        what = "matches no parameter" if not hits else f"matches {len(hits)} parameters"
        raise GoracsError(f"block {block!r} {what}; give a full name or a unique dotted "
                          f"suffix, e.g. {', '.join(lora) or names[-1]}")
    return hits[0]


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
        Parameter to measure (see :func:`find_block`); a weight or bias of a linear layer.
    batch_size : int
        Samples per forward/backward pass.
    max_length : int
        Tokens kept per sample (see :func:`goracs.records.tokenize_texts`).
    sort_by_length : bool
        Batch samples of similar length together (less padding).
    share_prefix : bool
        Run the prefix that all samples share once (see the module docstring).
    identity : dict, optional
        Description of the model (from :func:`load_scoring_model`); needed to cache results.
    shard_batches : int
        Batches per cache shard: the most work an interruption can lose.
    loss : {"text", "response"}
        The tokens each sample's loss covers (see the module docstring); ``"response"``
        needs the response starts in :meth:`scores_from_ids`.
    """

    def __init__(self, model: Any, tokenizer: Any, *, block: str | None = None,
                 batch_size: int = 8, max_length: int = 512, sort_by_length: bool = True,
                 share_prefix: bool = True, identity: dict[str, Any] | None = None,
                 shard_batches: int = 8, loss: str = "text") -> None:
        import torch

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
        params = dict(model.named_parameters(remove_duplicate=False))
        self.param = params[self.block_name]
        self.device = self.param.device
        self._activate()
        owner_name, _, kind = self.block_name.rpartition(".")
        self.module = model.get_submodule(owner_name)
        if not isinstance(self.module, torch.nn.Linear) or kind not in ("weight", "bias"):
            raise GoracsError(f"block {self.block_name} is not the weight or bias of a linear "
                              f"layer (it belongs to a {type(self.module).__name__})")
        shared = [n for n, m in model.named_modules(remove_duplicate=False)
                  if any(q is self.param for q in m.parameters(recurse=False))]
        if len(shared) > 1:
            raise GoracsError(f"block {self.block_name} is tied to {len(shared)} modules; "
                              "choose an untied block")
        self.kind = kind
        self.lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.pad_id = (tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                       else tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0)
        self.decoder, self.head, self.layer_index = self._locate_parts()
        self.fast = self._check_fast_route()
        self._prefix: dict[str, Any] | None = None

    def _activate(self) -> None:
        """Let only the block keep a gradient (again: another scorer on the same model may
        have chosen a different block since)."""
        for p in self.model.parameters():
            p.requires_grad_(p is self.param)

    # ---- model structure --------------------------------------------------------------
    def _locate_parts(self) -> tuple[Any, Any, int | None]:
        import torch

        decoder = self.lm.get_decoder() if hasattr(self.lm, "get_decoder") else None
        head = self.lm.get_output_embeddings() if hasattr(self.lm, "get_output_embeddings") \
            else None
        layers = getattr(decoder, "layers", None)
        if (decoder is None or not isinstance(head, torch.nn.Linear)
                or not isinstance(layers, torch.nn.ModuleList)
                or not isinstance(getattr(decoder, "norm", None), torch.nn.Module)):
            return None, None, None
        index = None
        for i, layer in enumerate(layers):
            if any(m is self.module for m in layer.modules()):
                index = i
                break
        return decoder, head, index

    @contextmanager
    def _stack(self, start: int, stop: int | None, final_norm: bool) -> Iterator[None]:
        """Temporarily reduce the decoder to layers ``start:stop`` (and maybe no final norm),
        so that the model's own forward code runs one part of the stack."""
        import torch

        dec = self.decoder
        layers, norm = dec.layers, dec.norm
        dec.layers = torch.nn.ModuleList(list(layers)[start:stop])
        if not final_norm:
            dec.norm = torch.nn.Identity()
        try:
            yield
        finally:
            dec.layers, dec.norm = layers, norm

    def _new_cache(self, kv: list[tuple[Any, Any]] | None, batch: int) -> Any:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.lm.config)
        if kv:
            for i, (k, v) in enumerate(kv):
                cache.layers[i].update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1))
        return cache

    def _prefix_pass(self, tokens: Sequence[int]) -> tuple[Any, list[tuple[Any, Any]]]:
        """Hidden states entering the block's layer, and the key/value cache below it."""
        import torch

        ids = torch.tensor([list(tokens)], dtype=torch.long, device=self.device)
        cache = self._new_cache(None, 1)
        with torch.no_grad(), self._stack(0, self.layer_index, final_norm=False):
            out = self.decoder(input_ids=ids, cache=cache, use_cache=True)
        kv = [(cache.layers[i].keys, cache.layers[i].values) for i in range(self.layer_index)]
        return out.last_hidden_state, kv

    def _hidden(self, ids: Any, mask: Any, prefix: dict[str, Any] | None) -> Any:
        """Final hidden states (after the last norm) of the batch, prefix positions included;
        only the part from the block's layer up is recorded for autograd."""
        import torch

        if prefix is None:
            return self.decoder(input_ids=ids, attention_mask=mask, use_cache=False)\
                .last_hidden_state
        batch = ids.shape[0]
        with torch.no_grad(), self._stack(0, self.layer_index, final_norm=False):
            cache = self._new_cache(prefix["kv"], batch)
            low = self.decoder(input_ids=ids, attention_mask=mask, cache=cache,
                               use_cache=True).last_hidden_state
        x = torch.cat([prefix["hidden"].expand(batch, -1, -1), low], dim=1)
        with self._stack(self.layer_index, None, final_norm=True):
            return self.decoder(inputs_embeds=x, attention_mask=mask, use_cache=False)\
                .last_hidden_state

    def _check_fast_route(self) -> bool:
        """Does the direct route reproduce the model's own logits? Decides it once, on a short
        input, so that models with extra steps before the logits fall back to the plain one."""
        import torch

        if self.decoder is None:
            return False
        vocab = self.head.weight.shape[0]
        ids = (torch.arange(16, dtype=torch.long, device=self.device) * 7919 + 11) % vocab
        ids = ids.unsqueeze(0)
        # Half-precision logits of this check differ by a few percent between two ways of
        # batching the same sum; a structural mismatch (wrong positions, a missing step)
        # changes them by far more.
        tol = 1e-4 if self.head.weight.dtype == torch.float32 else 0.1
        with torch.no_grad():
            ref = self.lm(input_ids=ids).logits.float()
            scale = ref.abs().max().clamp_min(1e-6)
            got = self.head(self._hidden(ids, torch.ones_like(ids), None)).float()
            if not torch.allclose(got, ref, atol=float(tol * scale), rtol=0):
                return False
            if self.layer_index:
                try:
                    hidden, kv = self._prefix_pass(ids[0, :6].tolist())
                    prefix = {"hidden": hidden, "kv": kv}
                    split = self.head(self._hidden(ids[:, 6:], torch.ones_like(ids), prefix))
                    same = torch.allclose(split.float(), ref, atol=float(tol * scale), rtol=0)
                except (AttributeError, TypeError, ValueError, IndexError, RuntimeError):
                    # Key/value cache layouts change between transformers releases (5.17's
                    # cache has no filled layers to extend); then the prefix is not shared.
                    same = False
                if not same:
                    self.layer_index = None
        return True

    # ---- gradient pieces ----------------------------------------------------------------
    @contextmanager
    def _capture(self) -> Iterator[dict[str, Any]]:
        seen: dict[str, Any] = {}

        def hook(module: Any, args: tuple[Any, ...], output: Any) -> None:
            if "out" in seen:
                raise GoracsError(f"block {self.block_name} is used more than once per forward "
                                  "pass; choose another block")
            seen["inp"] = args[0].detach()
            seen["out"] = output

        handle = self.module.register_forward_hook(hook)
        try:
            yield seen
        finally:
            handle.remove()

    def _per_sample_grads(self, inp: Any, gout: Any, mask: Any) -> Any:
        """Rebuild each sample's gradient of the block from its inputs and output gradients."""
        import torch

        m = mask.to(torch.float32).unsqueeze(-1)
        g = gout.float() * m
        if self.kind == "bias":
            return g.sum(dim=1).double()
        a = inp.float() * m
        return torch.einsum("bto,bti->boi", g, a).double()

    def _head_backward(self, hidden: Any, rows: Any, targets: Any, weights: Any,
                       scored: Any = None) -> tuple[Any, Any]:
        """Gradient of sum_r weights[r] * CE(targets[r] | hidden[rows[r]]) with respect to the
        final hidden states, computed chunk by chunk without keeping the full logits; and,
        for the rows where the boolean ``scored`` is true, their error norms (float64, NaN
        elsewhere; None without ``scored``)."""
        import torch

        head_w = self.head.weight
        bias = self.head.bias
        flat = hidden.reshape(-1, hidden.shape[-1])
        grad = torch.zeros_like(flat)
        errors = None
        if scored is not None:
            errors = torch.full((rows.shape[0],), float("nan"), dtype=torch.float64,
                                device=flat.device)
        with torch.no_grad():
            for s in range(0, rows.shape[0], HEAD_CHUNK):
                r = rows[s:s + HEAD_CHUNK]
                t = targets[s:s + HEAD_CHUNK]
                w = weights[s:s + HEAD_CHUNK].float()
                z = flat[r] @ head_w.T
                if bias is not None:
                    z = z + bias
                z = z.float()
                # d CE / d z = softmax(z) - onehot(target) = (e - total * onehot) / total with
                # e = exp(z - max). The target is subtracted before the product (after it, the
                # two nearly equal terms of a confident prediction would cancel badly); the
                # normaliser and the sample weight scale the (rows x hidden) product instead
                # of the (rows x vocabulary) matrix.
                z.sub_(z.amax(dim=1, keepdim=True)).exp_()
                if errors is not None:
                    # EL2N needs the same e rows, before the target is subtracted; only the
                    # response rows are read, so the prompt rows cost nothing extra.
                    pick = torch.nonzero(scored[s:s + HEAD_CHUNK]).squeeze(1)
                    if pick.numel():
                        errors[s + pick] = _error_norms(z[pick], t[pick])
                total = z.sum(dim=1)
                z[torch.arange(r.shape[0], device=z.device), t] -= total
                g = (z.to(head_w.dtype) @ head_w).float() * (w / total).unsqueeze(1)
                grad[r] = g.to(grad.dtype)
        return grad.reshape(hidden.shape), errors

    def _loss_rows(self, length: int, start: int, first: int | None) -> tuple[np.ndarray, float]:
        """The rows (positions t >= ``start``, each predicting token t + 1) whose losses a
        sample of ``length`` tokens sums, and the weight of each: all rows and 1/(length - 1)
        for the whole-text loss; the response rows (from ``first`` - 1) and 1/(length -
        first) for the response loss."""
        if self.loss == "response":
            assert first is not None and first - 1 >= start
            return np.arange(first - 1, length - 1), 1.0 / (length - first)
        return np.arange(start, length - 1), 1.0 / (length - 1)

    def _grads_fast(self, seqs: list[np.ndarray], start: int, prefix: dict[str, Any] | None,
                    starts: np.ndarray | None = None, embed: bool = False
                    ) -> tuple[Any, np.ndarray | None, Any]:
        """Per-sample gradients (B, ...) of the losses of the tokens after position ``start``
        (the positions before it are the shared prefix, or none); with the response starts
        ``starts``, each sample's EL2N too (float64, else None), and with ``embed`` each
        sample's mean prompt state (B, d) (else None)."""
        import torch

        lens = [len(s) for s in seqs]
        batch, width = len(seqs), max(lens)
        ids = torch.full((batch, width - start), self.pad_id, dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        rows, targets, weights, scored = [], [], [], []
        for b, s in enumerate(seqs):
            ids[b, :lens[b] - start] = torch.from_numpy(s[start:].astype(np.int64))
            mask[b, :lens[b]] = 1
            t, w = self._loss_rows(lens[b], start, None if starts is None else int(starts[b]))
            rows.append(b * width + t)
            targets.append(np.asarray(s[t + 1], dtype=np.int64))
            weights.append(np.full(len(t), w))
            if starts is not None:
                # Row t predicts token t + 1: the response rows start one before it.
                scored.append(t >= starts[b] - 1)
        dev = self.device
        ids, mask = ids.to(dev), mask.to(dev)
        rows_t = torch.from_numpy(np.concatenate(rows)).to(dev)
        targets_t = torch.from_numpy(np.concatenate(targets)).to(dev)
        weights_t = torch.from_numpy(np.concatenate(weights)).float().to(dev)
        scored_t = None if starts is None else torch.from_numpy(np.concatenate(scored)).to(dev)
        with self._capture() as seen, torch.enable_grad():
            hidden = self._hidden(ids, mask, prefix)
            dh, errors = self._head_backward(hidden.detach(), rows_t, targets_t, weights_t,
                                             scored_t)
            (gout,) = torch.autograd.grad(hidden, seen["out"], grad_outputs=dh)
        grads = self._per_sample_grads(seen["inp"], gout, mask)
        emb = self._prompt_means(hidden.detach(), starts) if embed else None
        if starts is None:
            return grads, None, emb
        err = errors.cpu().numpy()
        el2n = np.empty(batch, dtype=np.float64)
        pos = 0
        for b in range(batch):
            k = len(scored[b])
            total = float(err[pos:pos + k][scored[b]].sum())
            pos += k
            first = int(starts[b]) - 1
            if first < start:  # response rows inside the shared prefix (a tiny pool)
                total += float(prefix["errors"][first:start].sum())
            el2n[b] = total / (lens[b] - starts[b])
        return grads, el2n, emb

    @staticmethod
    def _prompt_means(hidden: Any, starts: np.ndarray | None) -> Any:
        """Mean of each row's states over its prompt positions ``0 .. starts[b] - 1``."""
        import torch

        if starts is None:
            raise GoracsError("LLM embeddings need each sample's response start")
        out = torch.stack([hidden[b, :int(starts[b])].float().mean(dim=0)
                           for b in range(hidden.shape[0])])
        return out.cpu().numpy().astype(np.float32)

    def _grads_plain(self, seqs: list[np.ndarray], starts: np.ndarray | None = None,
                     embed: bool = False) -> tuple[Any, np.ndarray | None, Any]:
        """The same per-sample gradients (EL2N, prompt means) through the model's own forward
        pass."""
        import torch

        lens = [len(s) for s in seqs]
        batch, width = len(seqs), max(lens)
        ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        for b, s in enumerate(seqs):
            ids[b, :lens[b]] = torch.from_numpy(s.astype(np.int64))
            mask[b, :lens[b]] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        with self._capture() as seen, torch.enable_grad():
            out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=embed)
            logits = out.logits
            first = starts if self.loss == "response" else None
            loss = sample_losses(logits, ids, mask, first).sum()
            (gout,) = torch.autograd.grad(loss, seen["out"])
        grads = self._per_sample_grads(seen["inp"], gout, mask)
        emb = self._prompt_means(out.hidden_states[-1].detach(), starts) if embed else None
        if starts is None:
            return grads, None, emb
        owner = np.concatenate([np.full(lens[b] - starts[b], b) for b in range(batch)])
        pos = np.concatenate([np.arange(starts[b] - 1, lens[b] - 1) for b in range(batch)])
        bi = torch.from_numpy(owner).to(self.device)
        ti = torch.from_numpy(pos).to(self.device)
        with torch.no_grad():
            z = logits.detach()[bi, ti].double()
            errors = _error_norms((z - z.amax(dim=1, keepdim=True)).exp(), ids[bi, ti + 1])
        err = errors.cpu().numpy()
        bounds = np.concatenate([[0], np.cumsum([lens[b] - starts[b] for b in range(batch)])])
        el2n = np.array([err[bounds[b]:bounds[b + 1]].sum() / (bounds[b + 1] - bounds[b])
                         for b in range(batch)], dtype=np.float64)
        return grads, el2n, emb

    def _prepare_prefix(self, ids: Sequence[Sequence[int]],
                        starts: Sequence[int] | None = None) -> dict[str, Any] | None:
        """State of the shared prefix: its cache, its hidden states at the block's layer, the
        gradient G_pre of the summed losses of the tokens inside it, and the error norm of
        each of its rows (for responses that begin inside it). Under the response loss the
        prefix ends before the first row that predicts a response token."""
        import torch

        start = self.shared_prefix_length(ids)
        if self.loss == "response" and start and starts is not None and len(starts):
            start = min(start, int(np.min(starts)) - 1)
            if start < MIN_SHARED_TOKENS:
                start = 0
        if start == 0:
            return None
        first = np.asarray(ids[0], dtype=np.int64)
        tokens = first[:start + 1].tolist()
        hidden, kv = self._prefix_pass(tokens[:start])
        # G_pre: losses of tokens 1..start given the ones before, all inside the prefix.
        with self._capture() as seen, torch.enable_grad():
            with self._stack(self.layer_index, None, final_norm=True):
                top = self.decoder(inputs_embeds=hidden, use_cache=False).last_hidden_state
            dev = self.device
            rows = torch.arange(start, device=dev)
            targets = torch.tensor(tokens[1:start + 1], dtype=torch.long, device=dev)
            dh, errors = self._head_backward(top.detach(), rows, targets,
                                             torch.ones(start, device=dev),
                                             torch.ones(start, dtype=torch.bool, device=dev))
            (gout,) = torch.autograd.grad(top, seen["out"], grad_outputs=dh)
        g_pre = self._per_sample_grads(seen["inp"], gout,
                                       torch.ones((1, start), device=dev))[0]
        return {"start": start, "tokens": tokens, "hidden": hidden, "kv": kv, "g_pre": g_pre,
                "errors": errors.cpu().numpy()}

    # ---- public -------------------------------------------------------------------------
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
        """Where each sample's response begins (see :func:`response_start`).

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

    def prepare(self, ids: Sequence[Sequence[int]],
                starts: Sequence[int] | None = None) -> None:
        """Set up the work shared by a set of samples (their common prefix); every later
        :meth:`batch_scores` call must take samples of this set (and, under the response
        loss, response starts no earlier than ``starts``' smallest)."""
        self._activate()
        if self.loss == "response" and starts is None:
            raise GoracsError("the response loss needs each sample's response start")
        self._prefix = self._prepare_prefix(ids, starts)

    def processing_order(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        """The order in which samples are batched: by length (ties by position) or as given."""
        n = len(ids)
        if not self.sort_by_length:
            return np.arange(n)
        return np.lexsort((np.arange(n), np.array([len(s) for s in ids], dtype=np.int64)))

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
        import torch

        seqs = [_as_ids(s) for s in seqs]
        st = None if starts is None else np.asarray(starts, dtype=np.int64)
        if self.loss == "response" and st is None:
            raise GoracsError("the response loss needs each sample's response start")
        self._activate()
        prefix = self._prefix
        if not self.fast:
            grads, el2n, emb = self._grads_plain(seqs, st, embed)
        elif prefix is None:
            grads, el2n, emb = self._grads_fast(seqs, 0, None, st, embed)
        else:
            head = prefix["tokens"]
            if any(not np.array_equal(s[:len(head)], head) for s in seqs):
                raise GoracsError("a batch holds a sample outside the prepared set (its start "
                                  "differs from the shared prefix); call prepare() first")
            if st is not None and self.loss == "response" and \
                    int(st.min()) - 1 < prefix["start"]:
                raise GoracsError("a batch holds a response that starts inside the prepared "
                                  "prefix; call prepare() with its response starts")
            grads, el2n, emb = self._grads_fast(seqs, prefix["start"], prefix, st, embed)
            if self.loss == "text":
                inv = torch.tensor([1.0 / (len(s) - 1) for s in seqs], dtype=torch.float64,
                                   device=self.device)
                grads = grads + inv.view(-1, *([1] * (grads.dim() - 1))) * prefix["g_pre"]
        flat = grads.flatten(1)
        norms = flat.norm(dim=1).cpu().numpy()
        if st is None:
            return norms, None, None, emb
        return norms, el2n, flat.float().cpu().numpy(), emb

    def batch_norms(self, seqs: Sequence[Sequence[int]],
                    starts: Sequence[int] | None = None) -> np.ndarray:
        """Gradient norms (float64) of one batch of samples of the prepared set."""
        return self.batch_scores(seqs, starts)[0]

    def cache_key(self, ids: Sequence[Sequence[int]],
                  starts: Sequence[int] | None = None, *, scores: bool = True,
                  embed: bool = False) -> str:
        """Content key of the results for ``ids`` (and response starts, when given), under
        this scorer's loss, with or without the scores and embeddings."""
        if self.identity is None:
            raise GoracsError("caching gradient norms needs the model identity "
                              "(load the model with load_scoring_model)")
        doc: dict[str, Any] = {
            "kind": "grad_norms", "version": CACHE_VERSION, "ids": _ids_digest(ids),
            "model": self.identity, "block": self.block_name, "batch_size": self.batch_size,
            "sort_by_length": self.sort_by_length,
            "share_prefix": bool(self.share_prefix and self.fast and self.layer_index),
            "fast": self.fast,
            "response_starts": None if starts is None else _ids_digest([list(starts)]),
        }
        # Entries added later appear only when they differ from what the key always meant,
        # so the caches of earlier runs stay valid.
        if self.loss != "text":
            doc["loss"] = self.loss
        if starts is not None and not scores:
            doc["scores"] = False
        if embed:
            doc["embeddings"] = "mean prompt state, last layer"
        return content_key(doc)

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
                        embed: bool = False) -> SampleScores:
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
        """
        from tqdm import tqdm

        if len(ids) == 0:
            raise GoracsError("no samples to score")
        seqs = [_as_ids(s) for s in ids]
        short = [i for i, s in enumerate(seqs) if len(s) < 2]
        if short:
            raise GoracsError(f"sample {short[0]} has fewer than 2 tokens: nothing to predict")
        n = len(seqs)
        starts = None
        if response_starts is None and (self.loss == "response" or embed):
            raise GoracsError("the response loss and LLM embeddings need each sample's "
                              "response start")
        if response_starts is not None:
            starts = np.asarray(response_starts, dtype=np.int64).reshape(-1)
            if starts.shape[0] != n:
                raise GoracsError(f"{starts.shape[0]} response starts for {n} samples")
            for i, (s, q) in enumerate(zip(starts, seqs, strict=True)):
                if s >= len(q):
                    raise GoracsError(
                        f"sample {i}: max-length {self.max_length} leaves no response token "
                        f"(the prompt takes {s} of its {len(q)} tokens); raise --max-length "
                        "or skip EL2N and influence with --no-scores")
                if s < 1:
                    raise GoracsError(f"sample {i}: a response cannot start at token {s}")
        with_scores = starts is not None and scores
        names = (["gradnorms"] + (["el2n", "influence"] if with_scores else [])
                 + (["llmemb"] if embed else []))
        final = parts = None
        if cache_dir is not None:
            key = self.cache_key(seqs, starts, scores=scores, embed=embed)
            final = {k: Path(cache_dir) / f"{k}-{key}.npy" for k in names}
            parts = Path(cache_dir) / f"gradnorms-{key}.parts"
            if all(f.is_file() for f in final.values()):
                got = {k: np.load(f, allow_pickle=False) for k, f in final.items()}
                return SampleScores(got["gradnorms"], got.get("el2n"), got.get("influence"),
                                    got.get("llmemb"))
        order = self.processing_order(seqs)
        shard = self.batch_size * self.shard_batches
        bounds = list(range(0, n, shard))
        sizes = [min(shard, n - s) for s in bounds]
        found = load_parts(parts, "shard", sizes, ndim=1)
        errs: list[np.ndarray | None] = [None] * len(sizes)
        embs: list[np.ndarray | None] = [None] * len(sizes)
        # Gradient shards stay on disk when there is a cache (they can be large) and are
        # read back one at a time for the influence pass.
        grads: list[np.ndarray | Path | None] = [None] * len(sizes)
        if with_scores:
            errs = load_parts(parts, "el2n", sizes, ndim=1)
            grads = _grad_parts(parts, sizes)
            found = [f if e is not None and g is not None else None
                     for f, e, g in zip(found, errs, grads, strict=True)]
        if embed:
            embs = load_parts(parts, "llmemb", sizes, ndim=2)
            found = [f if e is not None else None for f, e in zip(found, embs, strict=True)]
        done = sum(a.shape[0] for a in found if a is not None)
        bar = tqdm(total=n, initial=done, desc="gradient scores" if with_scores
                   else "gradient norms", unit="sample", disable=not progress,
                   file=sys.stderr, dynamic_ncols=True)
        with bar:
            if done < n:
                self.prepare(seqs, starts)
            for k, s in enumerate(bounds):
                if found[k] is not None:
                    continue
                idx = order[s:s + shard]
                out: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None,
                                np.ndarray | None]] = []
                for b in range(0, len(idx), self.batch_size):
                    part = idx[b:b + self.batch_size]
                    st = None if starts is None else starts[part]
                    got = (self.batch_scores([seqs[i] for i in part], st, embed=True) if embed
                           else self.batch_scores([seqs[i] for i in part], st))
                    out.append(got)
                    bar.update(len(part))
                norms_k = np.concatenate([o[0] for o in out])
                if with_scores:
                    errs[k] = np.concatenate([o[1] for o in out])
                    grads[k] = np.concatenate([o[2] for o in out])
                if embed:
                    embs[k] = np.concatenate([o[3] for o in out])
                if parts is not None:
                    # The norms shard goes last: its presence marks the shard complete.
                    if with_scores:
                        atomic_save_npy(parts / f"grad-{k:05d}.npy", grads[k])
                        atomic_save_npy(parts / f"el2n-{k:05d}.npy", errs[k])
                        grads[k] = parts / f"grad-{k:05d}.npy"
                    if embed:
                        atomic_save_npy(parts / f"llmemb-{k:05d}.npy", embs[k])
                    atomic_save_npy(parts / f"shard-{k:05d}.npy", norms_k)
                found[k] = norms_k
        results = {"gradnorms": _unsort(found, order)}
        if with_scores:
            results["el2n"] = _unsort(errs, order)
            results["influence"] = _unsort(_influence(grads, n), order)
        if embed:
            results["llmemb"] = _unsort_rows(embs, order)
        for name, arr in results.items():
            if not np.isfinite(arr).all():
                raise GoracsError(f"{_LABELS[name]} contain NaN or inf (try --dtype fp32)")
        if final is not None:
            for name, arr in results.items():
                atomic_save_npy(final[name], arr)
            shutil.rmtree(parts, ignore_errors=True)
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
        import torch
        from tqdm import tqdm

        seqs = [_as_ids(s) for s in ids]
        ends = np.asarray(prompt_ends, dtype=np.int64).reshape(-1)
        if len(seqs) == 0:
            raise GoracsError("no samples to embed")
        if ends.shape[0] != len(seqs):
            raise GoracsError(f"{ends.shape[0]} prompt ends for {len(seqs)} samples")
        bad = np.flatnonzero((ends < 1) | (ends > np.array([len(s) for s in seqs])))
        if bad.size:
            raise GoracsError(f"sample {int(bad[0])}: its prompt end {int(ends[bad[0]])} is "
                              "outside its tokens")
        final = None
        if cache_dir is not None:
            if self.identity is None:
                raise GoracsError("caching LLM embeddings needs the model identity "
                                  "(load the model with load_scoring_model)")
            key = content_key({
                "kind": "llm_prompt_embeddings", "version": CACHE_VERSION,
                "ids": _ids_digest(seqs), "ends": _ids_digest([list(ends)]),
                "model": self.identity, "batch_size": self.batch_size,
                "share_prefix": bool(self.share_prefix and self.fast and self.layer_index),
                "fast": self.fast})
            final = Path(cache_dir) / f"llmemb-valid-{key}.npy"
            if final.is_file():
                return np.load(final, allow_pickle=False)
        order = self.processing_order(seqs)
        start = self.shared_prefix_length(seqs)
        start = min(start, int(ends.min()) - 1)
        prefix = None
        if self.fast and start >= MIN_SHARED_TOKENS:
            hidden, kv = self._prefix_pass(seqs[0][:start].tolist())
            prefix = {"hidden": hidden, "kv": kv}
        else:
            start = 0
        pieces = []
        with torch.no_grad(), tqdm(total=len(seqs), desc="LLM embeddings", unit="sample",
                                   disable=not progress, file=sys.stderr,
                                   dynamic_ncols=True) as bar:
            for b in range(0, len(seqs), self.batch_size):
                part = order[b:b + self.batch_size]
                batch = [seqs[i] for i in part]
                lens = [len(s) for s in batch]
                width = max(lens)
                x = torch.full((len(batch), width - start), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for r, s in enumerate(batch):
                    x[r, :lens[r] - start] = torch.from_numpy(s[start:].astype(np.int64))
                    mask[r, :lens[r]] = 1
                x, mask = x.to(self.device), mask.to(self.device)
                if self.fast:
                    hidden = self._hidden(x, mask, prefix)
                else:
                    hidden = self.model(input_ids=x, attention_mask=mask,
                                        output_hidden_states=True).hidden_states[-1]
                pieces.append(self._prompt_means(hidden, ends[part]))
                bar.update(len(batch))
        out = _unsort_rows(pieces, order)
        if not np.isfinite(out).all():
            raise GoracsError("LLM embeddings contain NaN or inf (try --dtype fp32)")
        if final is not None:
            atomic_save_npy(final, out)
        return out

    def shared_prefix_length(self, ids: Sequence[Sequence[int]]) -> int:
        """How many leading tokens of ``ids`` run once for the whole set (0: none).

        All but the last token that every sample shares: that one's next token can differ
        per sample, so it stays in the batches.
        """
        if not (self.share_prefix and self.fast and self.layer_index) or len(ids) == 0:
            return 0
        first = np.asarray(ids[0], dtype=np.int64)
        common = min(len(s) for s in ids)
        for s in ids[1:]:
            diff = np.flatnonzero(np.asarray(s[:common], dtype=np.int64) != first[:common])
            if diff.size:
                common = int(diff[0])
        start = common - 1
        return start if start >= MIN_SHARED_TOKENS else 0


_LABELS = {"gradnorms": "gradient norms", "el2n": "EL2N scores",
           "influence": "influence scores", "llmemb": "LLM embeddings"}


def _unsort(pieces: Sequence[np.ndarray], order: np.ndarray) -> np.ndarray:
    """Per-sample float32 values in pool order, from shards in processing order."""
    out = np.empty(order.shape[0], dtype=np.float32)
    out[order] = np.concatenate(pieces).astype(np.float32)
    return out


def _unsort_rows(pieces: Sequence[np.ndarray], order: np.ndarray) -> np.ndarray:
    """Per-sample float32 rows in pool order, from shards in processing order."""
    rows = np.concatenate(pieces).astype(np.float32)
    out = np.empty_like(rows)
    out[order] = rows
    return out


def _grad_parts(parts: Path | None, sizes: Sequence[int]) -> list[np.ndarray | Path | None]:
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


def _influence(grads: Sequence[np.ndarray | Path | None], n: int) -> list[np.ndarray]:
    """I(s) = (1/N) gbar^T g_s for every shard of gradients (H taken as the identity), in
    float64; shards on disk are read one at a time, twice (for gbar, then the products)."""

    def read(g: np.ndarray | Path | None) -> np.ndarray:
        assert g is not None  # every shard is complete by now
        return np.load(g, allow_pickle=False) if isinstance(g, Path) else g

    total: np.ndarray | None = None
    for g in grads:
        part = read(g).astype(np.float64).sum(axis=0)
        total = part if total is None else total + part
    gbar = total / n
    return [read(g).astype(np.float64) @ gbar / n for g in grads]


def sample_losses(logits: Any, ids: Any, mask: Any,
                  response_starts: Sequence[int] | None = None) -> Any:
    """Each sample's mean next-token cross-entropy over its own tokens (padding excluded);
    with ``response_starts``, over its response tokens alone."""
    import torch

    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    valid = mask[:, 1:].to(nll.dtype)
    if response_starts is not None:
        # Position t predicts token t + 1: token s is predicted at t = s - 1.
        pos = torch.arange(nll.shape[1], device=nll.device)
        first = torch.as_tensor(np.asarray(response_starts, dtype=np.int64),
                                device=nll.device).unsqueeze(1)
        valid = valid * (pos.unsqueeze(0) >= first - 1).to(nll.dtype)
    return (nll * valid).sum(dim=1) / valid.sum(dim=1)


def reference_norms(scorer: GradNormScorer, ids: Sequence[Sequence[int]],
                    progress: bool = False,
                    response_starts: Sequence[int] | None = None) -> np.ndarray:
    """The reference implementation's procedure, for checks and benchmarks: each batch (in
    the given order) takes one forward pass, then one backward pass per sample, down to the
    block, reading the block's gradient after each. With ``response_starts`` each loss
    covers the response tokens alone."""
    import torch
    from tqdm import tqdm

    seqs = [_as_ids(s) for s in ids]
    out = np.empty(len(seqs), dtype=np.float64)
    bs = scorer.batch_size
    scorer._activate()
    for s in tqdm(range(0, len(seqs), bs), desc="reference", disable=not progress,
                  file=sys.stderr):
        batch = seqs[s:s + bs]
        width = max(len(q) for q in batch)
        t_ids = torch.full((len(batch), width), scorer.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for b, q in enumerate(batch):
            t_ids[b, :len(q)] = torch.from_numpy(q.astype(np.int64))
            mask[b, :len(q)] = 1
        t_ids, mask = t_ids.to(scorer.device), mask.to(scorer.device)
        with torch.enable_grad():
            logits = scorer.model(input_ids=t_ids, attention_mask=mask).logits
            first = (None if response_starts is None
                     else np.asarray(response_starts, dtype=np.int64)[s:s + bs])
            losses = sample_losses(logits, t_ids, mask, first)
            for b in range(len(batch)):
                (g,) = torch.autograd.grad(losses[b], scorer.param,
                                           retain_graph=b < len(batch) - 1)
                out[s + b] = float(g.double().norm())
    return out
