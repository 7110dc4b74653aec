"""The prefix every sample shares, run once per set of samples (direct route only).

Every sample starts with the same tokens (the Alpaca preamble and, within a task, the same
instruction). The layers below the block's layer see the same values there for every sample,
so they run on that shared prefix once and the batches continue from its key/value cache.
The prefix's own next-token losses are also the same for every sample; their gradient G_pre
is computed once and added as G_pre / (n-1) to each sample's whole-text gradient. Both are
exact up to float rounding. Under the response loss the prefix ends before the first row
that predicts a response token, so no loss row falls inside it and G_pre is not added.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from goracs.errors import GoracsError
from goracs.features.blocks import Block
from goracs.features.decoder import PrefixCache, SplitDecoder
from goracs.features.head import head_backward
from goracs.features.per_sample import capture, per_sample_grads

# Shorter shared prefixes save less than the bookkeeping costs.
MIN_SHARED_TOKENS = 4


@dataclass(frozen=True)
class SharedPrefix:
    """State of the shared prefix of a prepared set of samples.

    ``start`` tokens run once; ``tokens`` are the first ``start + 1`` (every sample of the
    set begins with them); ``cache`` holds the prefix's states below the block's layer;
    ``g_pre`` is the block gradient of the summed losses of the tokens inside the prefix and
    ``errors`` the error norm of each of its rows (for responses that begin inside it).
    """

    start: int
    tokens: list[int]
    cache: PrefixCache
    g_pre: Any
    errors: np.ndarray

    def check_batch(self, seqs: Sequence[np.ndarray], starts: np.ndarray | None,
                    loss: str) -> None:
        """Refuse a batch that does not belong to the set this prefix was prepared for."""
        head = self.tokens
        if any(not np.array_equal(s[:len(head)], head) for s in seqs):
            raise GoracsError("a batch holds a sample outside the prepared set (its start "
                              "differs from the shared prefix); call prepare() first")
        if starts is not None and loss == "response" and int(starts.min()) - 1 < self.start:
            raise GoracsError("a batch holds a response that starts inside the prepared "
                              "prefix; call prepare() with its response starts")


def common_prefix_length(ids: Sequence[Sequence[int]]) -> int:
    """How many leading tokens of ``ids`` can run once for the whole set (0: none).

    All but the last token that every sample shares: that one's next token can differ
    per sample, so it stays in the batches. Shorter than ``MIN_SHARED_TOKENS``: 0.
    """
    if len(ids) == 0:
        return 0
    first = np.asarray(ids[0], dtype=np.int64)
    common = min(len(s) for s in ids)
    for s in ids[1:]:
        diff = np.flatnonzero(np.asarray(s[:common], dtype=np.int64) != first[:common])
        if diff.size:
            common = int(diff[0])
    start = common - 1
    return start if start >= MIN_SHARED_TOKENS else 0


def prepare_prefix(split: SplitDecoder, block: Block, ids: Sequence[Sequence[int]],
                   start: int, starts: Sequence[int] | None, loss: str
                   ) -> SharedPrefix | None:
    """The shared prefix of ``ids`` (``start`` tokens, from :func:`common_prefix_length`; 0
    for none), cut short of every response under the response loss; None when nothing is
    left to share."""
    import torch

    if loss == "response" and start and starts is not None and len(starts):
        start = min(start, int(np.min(starts)) - 1)
        if start < MIN_SHARED_TOKENS:
            start = 0
    if start == 0:
        return None
    first = np.asarray(ids[0], dtype=np.int64)
    tokens = first[:start + 1].tolist()
    cache = split.prefix_pass(tokens[:start])
    # G_pre: losses of tokens 1..start given the ones before, all inside the prefix.
    with capture(block) as seen, torch.enable_grad():
        with split.stack(split.layer_index, None, final_norm=True):
            top = split.decoder(inputs_embeds=cache.hidden, use_cache=False).last_hidden_state
        dev = split.device
        rows = torch.arange(start, device=dev)
        targets = torch.tensor(tokens[1:start + 1], dtype=torch.long, device=dev)
        dh, errors = head_backward(split.head, top.detach(), rows, targets,
                                   torch.ones(start, device=dev),
                                   torch.ones(start, dtype=torch.bool, device=dev))
        (gout,) = torch.autograd.grad(top, seen["out"], grad_outputs=dh)
    g_pre = per_sample_grads(block.kind, seen["inp"], gout,
                             torch.ones((1, start), device=dev))[0]
    return SharedPrefix(start, tokens, cache, g_pre, errors.cpu().numpy())


def add_prefix_gradient(grads: Any, seqs: Sequence[np.ndarray], prefix: SharedPrefix,
                        device: Any) -> Any:
    """Each sample's whole-text gradient with its share of G_pre added: G_pre / (n - 1)."""
    import torch

    inv = torch.tensor([1.0 / (len(s) - 1) for s in seqs], dtype=torch.float64, device=device)
    return grads + inv.view(-1, *([1] * (grads.dim() - 1))) * prefix.g_pre
