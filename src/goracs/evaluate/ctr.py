"""TALLRec-style CTR scoring: P(Yes) from the Yes and No logits after the prompt."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from goracs.errors import GoracsError
from goracs.features.samples import render_prompt
from goracs.train.model import decoder_and_head, head_logits


def answer_token_ids(tokenizer: Any, record: Mapping[str, Any]) -> tuple[int, int]:
    """Ids of the first token of ``Yes`` and of ``No`` as they follow the rendered prompt.

    They are read off the tokenization of the whole training text (prompt + answer), so they
    are the tokens that fine-tuning puts the loss on, whatever the tokenizer does at the
    boundary.
    """
    prompt = render_prompt(record, False)
    base = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    out = []
    for answer in ("Yes", "No"):
        full = tokenizer(prompt + answer, add_special_tokens=True)["input_ids"]
        n = 0
        while n < min(len(base), len(full)) and base[n] == full[n]:
            n += 1
        if n >= len(full):
            raise GoracsError(f"the tokenizer adds no token for {answer!r} after the prompt")
        out.append(int(full[n]))
    if out[0] == out[1]:
        raise GoracsError(f"Yes and No start with the same token ({out[0]}); P(Yes) is "
                          "undefined for this tokenizer")
    return out[0], out[1]


def p_yes_batch(model: Any, tokenizer: Any, prompts: Sequence[str], yes_id: int, no_id: int,
                device: str) -> np.ndarray:
    """P(Yes) = softmax over the (Yes, No) logits at the position after each prompt."""
    import torch

    enc = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    lengths = [len(e) for e in enc]
    width = max(lengths)
    ids = torch.full((len(enc), width), int(tokenizer.pad_token_id), dtype=torch.long)
    mask = torch.zeros((len(enc), width), dtype=torch.long)
    for i, e in enumerate(enc):
        ids[i, :len(e)] = torch.tensor(e, dtype=torch.long)
        mask[i, :len(e)] = 1
    decoder, head, cap = decoder_and_head(model)
    with torch.no_grad():
        hidden = decoder(input_ids=ids.to(device), attention_mask=mask.to(device)
                         ).last_hidden_state
        last = torch.tensor(lengths, device=hidden.device) - 1
        rows = head_logits(head, hidden[torch.arange(len(enc), device=hidden.device), last],
                           cap).double()
    # The two-way softmax is the logistic function of the logit difference.
    return torch.sigmoid(rows[:, yes_id] - rows[:, no_id]).cpu().numpy()
