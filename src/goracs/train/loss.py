"""The training objective: summed next-token cross-entropy over the label tokens of a
micro-batch, and the token-mean validation loss of a set of encoded samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from goracs.lm import decoder_and_head, head_logits
from goracs.train.encoding import IGNORE, micro_batch


def summed_loss(model: Any, batch: Mapping[str, Any]) -> tuple[Any, int]:
    """Sum of next-token cross-entropies over the label tokens of a micro-batch
    (:func:`goracs.train.encoding.micro_batch`), and their number."""
    import torch.nn.functional as F

    decoder, head, cap = decoder_and_head(model)
    hidden = decoder(input_ids=batch["input_ids"],
                     attention_mask=batch["attention_mask"]).last_hidden_state
    target = batch["labels"][:, 1:]
    keep = target != IGNORE
    # Logits only where a label is: the same loss as the full head, without its cost.
    logits = head_logits(head, hidden[:, :-1][keep], cap).float()
    loss = F.cross_entropy(logits, target[keep], reduction="sum")
    return loss, int(keep.sum())


def validation_loss(model: Any, ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]],
                    micro_batch_size: int, pad_id: int, device: str) -> float:
    """Token-mean cross-entropy of the model on encoded samples (no gradient)."""
    import torch

    order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for s in range(0, len(order), micro_batch_size):
            idx = order[s:s + micro_batch_size]
            batch = micro_batch([ids[i] for i in idx], [labels[i] for i in idx], pad_id,
                                device)
            loss, n = summed_loss(model, batch)
            total += float(loss)
            count += n
    model.train(was_training)
    return total / count if count else float("nan")
