"""The plain route: the same per-sample gradients, EL2N and prompt means through the model's
own forward pass, for models the direct route does not reproduce (an unusual head, logit
soft-capping). One backward pass a batch as well, but no prefix sharing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from goracs.features.batches import pad_batch
from goracs.features.blocks import Block
from goracs.features.el2n import error_norms
from goracs.features.per_sample import capture, per_sample_grads, sample_losses
from goracs.features.prompt_embeddings import prompt_means


def _logits_el2n(logits: Any, ids: Any, lens: list[int], starts: np.ndarray,
                 device: Any) -> np.ndarray:
    """Each sample's EL2N (float64) from the model's logits of its response rows."""
    import torch

    batch = len(lens)
    owner = np.concatenate([np.full(lens[b] - starts[b], b) for b in range(batch)])
    pos = np.concatenate([np.arange(starts[b] - 1, lens[b] - 1) for b in range(batch)])
    bi = torch.from_numpy(owner).to(device)
    ti = torch.from_numpy(pos).to(device)
    with torch.no_grad():
        z = logits.detach()[bi, ti].double()
        errors = error_norms((z - z.amax(dim=1, keepdim=True)).exp(), ids[bi, ti + 1])
    err = errors.cpu().numpy()
    bounds = np.concatenate([[0], np.cumsum([lens[b] - starts[b] for b in range(batch)])])
    return np.array([err[bounds[b]:bounds[b + 1]].sum() / (bounds[b + 1] - bounds[b])
                     for b in range(batch)], dtype=np.float64)


def grads_plain(model: Any, block: Block, seqs: list[np.ndarray],
                starts: np.ndarray | None = None, embed: bool = False, *, loss: str,
                pad_id: int, device: Any) -> tuple[Any, np.ndarray | None, Any]:
    """Per-sample gradients (B, ...) of the block, float64, through ``model``'s forward pass;
    with ``starts`` each sample's EL2N (else None), with ``embed`` its mean prompt state
    (else None), as :func:`goracs.features.direct_route.grads_direct` gives them."""
    import torch

    lens = [len(s) for s in seqs]
    ids, mask = pad_batch(seqs, 0, pad_id, device)
    with capture(block) as seen, torch.enable_grad():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=embed)
        logits = out.logits
        first = starts if loss == "response" else None
        total = sample_losses(logits, ids, mask, first).sum()
        (gout,) = torch.autograd.grad(total, seen["out"])
    grads = per_sample_grads(block.kind, seen["inp"], gout, mask)
    emb = prompt_means(out.hidden_states[-1].detach(), starts) if embed else None
    if starts is None:
        return grads, None, emb
    return grads, _logits_el2n(logits, ids, lens, starts, device), emb
