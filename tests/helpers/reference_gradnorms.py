"""The reference implementation's procedure for per-sample gradient norms, for checks and
benchmarks: one batched forward pass, then one backward pass per sample down to the block."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from goracs.features.gradnorms import GradNormScorer
from goracs.features.per_sample import sample_losses


def reference_norms(scorer: GradNormScorer, ids: Sequence[Sequence[int]],
                    progress: bool = False,
                    response_starts: Sequence[int] | None = None) -> np.ndarray:
    """The reference implementation's procedure, for checks and benchmarks: each batch (in
    the given order) takes one forward pass, then one backward pass per sample, down to the
    block, reading the block's gradient after each. With ``response_starts`` each loss
    covers the response tokens alone."""
    import torch
    from tqdm import tqdm

    seqs = [np.asarray(s, dtype=np.int32).reshape(-1) for s in ids]
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
