"""The prompt prefix that every scored sequence shares, run through the model once.

Every prompt of an evaluation renders the same Alpaca preamble and, within a task, the same
instruction, so the token ids of all prompts begin alike (on ML-1M about 70 of the 190-250
tokens of a prompt). A causal decoder computes the same keys and values there for every
prompt, so the prefix goes through the decoder once (with the adapter, when one is loaded),
its key/value cache is kept, and each later pass feeds only the tokens after it, continuing
from that cache expanded to the batch. Positions continue after the prefix and the
attention mask covers prefix + continuation, so each prompt sees what a plain pass shows it;
the scores agree with plain ones up to float rounding. Callers check that on a few prompts
before relying on it and fall back to plain passes when a model's cache cannot be reused
(:func:`goracs.evaluate.ctr.reusable_prefix`,
:func:`goracs.evaluate.likelihood.likelihood_prefix`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from goracs.lm import decoder_and_head

# A shorter shared prefix saves less than the cache bookkeeping costs.
MIN_SHARED_TOKENS = 4
# What a model whose cache cannot be filled, extended or masked this way raises.
CACHE_ERRORS = (AttributeError, TypeError, ValueError, IndexError, KeyError, RuntimeError,
                NotImplementedError)


@dataclass(frozen=True, eq=False)
class SharedPrefix:
    """The leading token ids shared by a set of sequences, with the decoder's key/value states
    of those tokens (one ``(keys, values)`` pair per layer, batch dimension 1).

    Attributes
    ----------
    ids : tuple of int
        The prefix's token ids.
    kv : tuple of (Tensor, Tensor)
        Per decoder layer, the keys and values of the prefix, each ``(1, heads, len, dim)``.
    config : object
        The decoder's configuration, from which a fresh cache is laid out.
    """

    ids: tuple[int, ...]
    kv: tuple[tuple[Any, Any], ...]
    config: Any

    def __len__(self) -> int:
        return len(self.ids)

    def matches(self, ids: Sequence[int]) -> bool:
        """Whether ``ids`` starts with the prefix and has at least one token after it."""
        n = len(self.ids)
        return len(ids) > n and tuple(int(t) for t in ids[:n]) == self.ids

    def cache(self, batch: int) -> Any:
        """A new key/value cache that holds the prefix for each of ``batch`` rows.

        The rows are views of the stored states (no copy); a forward pass appends its own
        tokens to the new cache and leaves the stored states as they are.
        """
        from transformers import DynamicCache

        cache = DynamicCache(config=self.config)
        if len(cache.layers) != len(self.kv):
            raise ValueError(f"the cache has {len(cache.layers)} layers, the prefix "
                             f"{len(self.kv)}")
        for layer, (k, v) in zip(cache.layers, self.kv, strict=True):
            layer.update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1))
        return cache


def common_prefix_length(ids: Sequence[Sequence[int]],
                         min_tokens: int = MIN_SHARED_TOKENS) -> int:
    """How many leading tokens every sequence of ``ids`` shares and a prefix pass may take.

    All but the last shared token: every sequence keeps at least one token after the prefix,
    whose output a caller reads (the logits after a prompt that is entirely shared).

    Parameters
    ----------
    ids : sequence of int sequences
        Token ids of the sequences.
    min_tokens : int
        A shorter shared run counts as none.

    Returns
    -------
    int
        The prefix length, 0 when the sequences share fewer than ``min_tokens + 1`` tokens or
        there are none.
    """
    if len(ids) == 0:
        return 0
    first = [int(t) for t in ids[0]]
    common = min(len(s) for s in ids)
    for seq in ids[1:]:
        k = 0
        while k < common and int(seq[k]) == first[k]:
            k += 1
        common = k
    start = common - 1
    return start if start >= min_tokens else 0


def run_prefix(model: Any, ids: Sequence[int], device: str) -> SharedPrefix:
    """Run ``ids`` through the decoder of ``model`` (its adapter included) and keep the
    key/value states of every layer.

    Parameters
    ----------
    model : causal LM
        Plain or peft-wrapped (:func:`goracs.lm.decoder_and_head`).
    ids : sequence of int
        The prefix's token ids (not empty).
    device : str
        Where the model is.

    Returns
    -------
    SharedPrefix
    """
    import torch
    from transformers import DynamicCache

    if len(ids) == 0:
        raise ValueError("the prefix has no tokens")
    decoder, _, _ = decoder_and_head(model)
    config = decoder.config
    cache = DynamicCache(config=config)
    with torch.no_grad():
        decoder(input_ids=torch.tensor([[int(t) for t in ids]], dtype=torch.long,
                                       device=device),
                cache=cache, use_cache=True)
    kv = tuple((layer.keys, layer.values) for layer in cache.layers)
    if not kv or any(k is None or k.shape[-2] != len(ids) for k, _ in kv):
        raise ValueError("the decoder did not fill its key/value cache with the prefix")
    return SharedPrefix(ids=tuple(int(t) for t in ids), kv=kv, config=config)


def shared_prefix(model: Any, ids: Sequence[Sequence[int]], device: str,
                  min_tokens: int = MIN_SHARED_TOKENS) -> SharedPrefix | None:
    """The prefix shared by all of ``ids`` (:func:`common_prefix_length`), run once; None when
    they share too little."""
    n = common_prefix_length(ids, min_tokens)
    if n == 0:
        return None
    return run_prefix(model, [int(t) for t in ids[0][:n]], device)


def prompts_prefix(model: Any, tokenizer: Any, prompts: Sequence[str], device: str
                   ) -> tuple[SharedPrefix, list[list[int]]] | None:
    """The shared prefix of ``prompts`` run once, with the prompts' token ids; None (with a
    note when the pass itself failed) when there is nothing worth sharing."""
    if not prompts:
        return None
    enc = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    try:
        prefix = shared_prefix(model, enc, device)
    except CACHE_ERRORS as exc:
        note_plain(f"the prefix pass failed: {type(exc).__name__}: {exc}")
        return None
    if prefix is None:
        return None
    return prefix, enc


def note_plain(reason: str) -> None:
    """Tell the user that scoring goes on without prefix reuse, and why."""
    print(f"note: the shared prompt prefix is not reused ({reason}); every prompt is scored "
          "whole (same scores, slower)", file=sys.stderr)
