"""The direct route: per-sample gradients, EL2N and prompt means of one batch, with the
decoder stack and the output head called apart.

The batch continues from the shared prefix when there is one (:mod:`goracs.features.prefix`);
only the loss rows of each sample enter the head's closed-form backward pass
(:mod:`goracs.features.head`), weighted so that each sample's loss is its mean
(:func:`goracs.features.per_sample.loss_rows`); one autograd step then carries the hidden
states' gradient down to the block, whose per-sample gradients are rebuilt from the hook.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from goracs.features.batches import pad_batch
from goracs.features.blocks import Block
from goracs.features.decoder import SplitDecoder
from goracs.features.head import head_backward
from goracs.features.per_sample import capture, loss_rows, per_sample_grads
from goracs.features.prefix import SharedPrefix, add_prefix_gradient
from goracs.features.prompt_embeddings import prompt_means


def _rows_of_batch(seqs: Sequence[np.ndarray], start: int, starts: np.ndarray | None,
                   loss: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """The loss rows of a batch as flat positions in its (B x width) hidden states, their
    target tokens and weights, and per sample which of its rows are response rows (empty
    without ``starts``)."""
    width = max(len(s) for s in seqs)
    rows, targets, weights, scored = [], [], [], []
    for b, s in enumerate(seqs):
        t, w = loss_rows(loss, len(s), start, None if starts is None else int(starts[b]))
        rows.append(b * width + t)
        targets.append(np.asarray(s[t + 1], dtype=np.int64))
        weights.append(np.full(len(t), w))
        if starts is not None:
            # Row t predicts token t + 1: the response rows start one before it.
            scored.append(t >= starts[b] - 1)
    return np.concatenate(rows), np.concatenate(targets), np.concatenate(weights), scored


def _batch_el2n(err: np.ndarray, scored: list[np.ndarray], seqs: Sequence[np.ndarray],
                starts: np.ndarray, start: int, prefix: SharedPrefix | None) -> np.ndarray:
    """Each sample's EL2N from the error norms of its loss rows (in batch order), adding
    the rows of a response that begins inside the shared prefix."""
    el2n = np.empty(len(seqs), dtype=np.float64)
    pos = 0
    for b in range(len(seqs)):
        k = len(scored[b])
        total = float(err[pos:pos + k][scored[b]].sum())
        pos += k
        first = int(starts[b]) - 1
        if first < start:  # response rows inside the shared prefix (a tiny pool)
            total += float(prefix.errors[first:start].sum())
        el2n[b] = total / (len(seqs[b]) - starts[b])
    return el2n


def grads_direct(split: SplitDecoder, block: Block, seqs: list[np.ndarray],
                 prefix: SharedPrefix | None, starts: np.ndarray | None = None,
                 embed: bool = False, *, loss: str, pad_id: int
                 ) -> tuple[Any, np.ndarray | None, Any]:
    """Per-sample gradients (B, ...) of the block, float64.

    The tokens before ``prefix.start`` are the shared prefix (none without ``prefix``);
    under the whole-text loss each gradient includes its share of the prefix's gradient.
    With the response starts ``starts``, each sample's EL2N too (float64, else None), and
    with ``embed`` each sample's mean prompt state (B, d) float32 (else None).
    """
    import torch

    start = 0 if prefix is None else prefix.start
    dev = split.device
    ids, mask = pad_batch(seqs, start, pad_id, dev)
    rows, targets, weights, scored = _rows_of_batch(seqs, start, starts, loss)
    rows_t = torch.from_numpy(rows).to(dev)
    targets_t = torch.from_numpy(targets).to(dev)
    weights_t = torch.from_numpy(weights).float().to(dev)
    scored_t = None if starts is None else torch.from_numpy(np.concatenate(scored)).to(dev)
    with capture(block) as seen, torch.enable_grad():
        hidden = split.hidden(ids, mask, None if prefix is None else prefix.cache)
        dh, errors = head_backward(split.head, hidden.detach(), rows_t, targets_t, weights_t,
                                   scored_t)
        (gout,) = torch.autograd.grad(hidden, seen["out"], grad_outputs=dh)
    grads = per_sample_grads(block.kind, seen["inp"], gout, mask)
    if prefix is not None and loss == "text":
        grads = add_prefix_gradient(grads, seqs, prefix, dev)
    emb = prompt_means(hidden.detach(), starts) if embed else None
    if starts is None:
        return grads, None, emb
    return grads, _batch_el2n(errors.cpu().numpy(), scored, seqs, starts, start, prefix), emb
