"""Calling the decoder stack and the output head apart (the direct route's model surgery).

The direct route runs the decoder stack itself and applies the output head separately, so
that the head's backward pass can be formed in closed form (:mod:`goracs.features.head`) and
the layers below the block's layer can run on a shared prefix once and continue from its
key/value cache (:mod:`goracs.features.prefix`). The route is checked against the model's own
forward pass on a short input when the scorer is built; a model that does not pass (an
unusual head, logit soft-capping) is scored through its plain forward pass instead
(:mod:`goracs.features.plain_route`), and one whose key/value cache cannot be extended keeps
the direct route without prefix sharing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PrefixCache:
    """A prefix run through the layers below the block's layer: the hidden states entering
    that layer (1, T, d) and the key/value pair of every layer below it."""

    hidden: Any
    kv: list[tuple[Any, Any]]


def locate_parts(lm: Any, module: Any) -> tuple[Any, Any, int | None]:
    """The decoder stack, the output head and the index of the decoder layer holding
    ``module``; (None, None, None) when the model lacks the expected layout."""
    import torch

    decoder = lm.get_decoder() if hasattr(lm, "get_decoder") else None
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    layers = getattr(decoder, "layers", None)
    if (decoder is None or not isinstance(head, torch.nn.Linear)
            or not isinstance(layers, torch.nn.ModuleList)
            or not isinstance(getattr(decoder, "norm", None), torch.nn.Module)):
        return None, None, None
    index = None
    for i, layer in enumerate(layers):
        if any(m is module for m in layer.modules()):
            index = i
            break
    return decoder, head, index


class SplitDecoder:
    """The decoder stack of ``lm`` run in parts around the layer that holds ``module``.

    Attributes
    ----------
    decoder, head : torch modules or None
        The decoder stack and the output head (None when the model lacks them).
    layer_index : int or None
        Index of the decoder layer holding the block; None when the block lies outside the
        stack or the prefix cannot be split off (then no prefix is shared).
    """

    def __init__(self, lm: Any, module: Any, device: Any) -> None:
        self.lm = lm
        self.device = device
        self.decoder, self.head, self.layer_index = locate_parts(lm, module)

    @contextmanager
    def stack(self, start: int, stop: int | None, final_norm: bool) -> Iterator[None]:
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

    def new_cache(self, kv: list[tuple[Any, Any]] | None, batch: int) -> Any:
        """A key/value cache for ``batch`` rows, filled with the prefix's ``kv`` when given."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.lm.config)
        if kv:
            for i, (k, v) in enumerate(kv):
                cache.layers[i].update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1))
        return cache

    def prefix_pass(self, tokens: Sequence[int]) -> PrefixCache:
        """Hidden states entering the block's layer, and the key/value cache below it."""
        import torch

        ids = torch.tensor([list(tokens)], dtype=torch.long, device=self.device)
        cache = self.new_cache(None, 1)
        with torch.no_grad(), self.stack(0, self.layer_index, final_norm=False):
            out = self.decoder(input_ids=ids, cache=cache, use_cache=True)
        kv = [(cache.layers[i].keys, cache.layers[i].values) for i in range(self.layer_index)]
        return PrefixCache(out.last_hidden_state, kv)

    def hidden(self, ids: Any, mask: Any, prefix: PrefixCache | None) -> Any:
        """Final hidden states (after the last norm) of the batch, prefix positions included;
        only the part from the block's layer up is recorded for autograd."""
        import torch

        if prefix is None:
            return self.decoder(input_ids=ids, attention_mask=mask, use_cache=False)\
                .last_hidden_state
        batch = ids.shape[0]
        with torch.no_grad(), self.stack(0, self.layer_index, final_norm=False):
            cache = self.new_cache(prefix.kv, batch)
            low = self.decoder(input_ids=ids, attention_mask=mask, cache=cache,
                               use_cache=True).last_hidden_state
        x = torch.cat([prefix.hidden.expand(batch, -1, -1), low], dim=1)
        with self.stack(self.layer_index, None, final_norm=True):
            return self.decoder(inputs_embeds=x, attention_mask=mask, use_cache=False)\
                .last_hidden_state

    def check(self) -> bool:
        """Does the direct route reproduce the model's own logits? Decides it once, on a short
        input, so that models with extra steps before the logits fall back to the plain one;
        when only the prefix split fails, ``layer_index`` becomes None (no prefix sharing)."""
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
            got = self.head(self.hidden(ids, torch.ones_like(ids), None)).float()
            if not torch.allclose(got, ref, atol=float(tol * scale), rtol=0):
                return False
            if self.layer_index:
                try:
                    prefix = self.prefix_pass(ids[0, :6].tolist())
                    split = self.head(self.hidden(ids[:, 6:], torch.ones_like(ids), prefix))
                    same = torch.allclose(split.float(), ref, atol=float(tol * scale), rtol=0)
                except (AttributeError, TypeError, ValueError, IndexError, RuntimeError):
                    # Key/value cache layouts change between transformers releases (5.17's
                    # cache has no filled layers to extend); then the prefix is not shared.
                    same = False
                if not same:
                    self.layer_index = None
        return True
