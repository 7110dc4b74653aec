"""Records as the trainer sees them: token ids and loss labels, padded micro-batches, and the
number of tokens each sample puts a loss on."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from goracs.records import render_prompt, response_start, tokenize_texts

#: the label of a token that carries no loss (the value torch's cross-entropy ignores)
IGNORE = -100


def encode_records(
    tokenizer: Any, records: Sequence[Mapping[str, Any]], cutoff_len: int, loss: str
) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids and loss labels of each record, rendered as the features stage renders it.

    The ids are those of :func:`goracs.records.tokenize_texts` on the whole rendering
    (cut to ``cutoff_len``, end-of-sequence appended when it fits). With ``loss="response"``
    the labels of the prompt tokens are ``-100`` (no loss): the prompt's length is that of its
    own tokenization, or of the common prefix when the tokenizer merges across the boundary.

    Returns
    -------
    (ids, labels) : two lists of equally long integer lists
    """
    full_texts = [render_prompt(r, True) for r in records]
    ids = tokenize_texts(tokenizer, full_texts, cutoff_len)
    if loss == "full":
        return ids, [list(x) for x in ids]
    prompts = tokenizer([render_prompt(r, False) for r in records],
                        add_special_tokens=True)["input_ids"]
    labels = []
    for seq, prompt in zip(ids, prompts, strict=True):
        n = response_start(seq, prompt)
        labels.append([IGNORE] * n + list(seq[n:]))
    return ids, labels


def loss_tokens(labels: Sequence[int]) -> int:
    """The number of tokens a sample's loss covers: the labels after the first (a label is
    predicted from the token before it) that are not :data:`IGNORE`."""
    return sum(1 for t in labels[1:] if t != IGNORE)


def pad(seqs: Sequence[Sequence[int]], value: int) -> np.ndarray:
    """``seqs`` right-padded with ``value`` into one int64 matrix."""
    width = max(len(s) for s in seqs)
    out = np.full((len(seqs), width), value, dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s
    return out


def micro_batch(ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]], pad_id: int,
                device: str) -> dict[str, Any]:
    """The tensors of one forward pass: ``input_ids``, ``attention_mask`` and ``labels``."""
    import torch

    # Right padding: under a causal mask the real tokens never see the pads after them, so a
    # padded sample gives the same logits as the sample alone.
    input_ids = torch.from_numpy(pad(ids, pad_id)).to(device)
    lab = torch.from_numpy(pad(labels, IGNORE)).to(device)
    mask = torch.from_numpy(pad([[1] * len(s) for s in ids], 0)).to(device)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": lab}


@dataclass(frozen=True)
class Encoded:
    """The token ids and loss labels of a set of samples (:func:`encode_records`)."""

    ids: list[list[int]]
    labels: list[list[int]]

    def __len__(self) -> int:
        return len(self.ids)

    def loss_tokens(self, rows: Iterable[int] | None = None) -> int:
        """The loss tokens of the samples ``rows`` (all when None), summed."""
        rows = range(len(self)) if rows is None else rows
        return sum(loss_tokens(self.labels[i]) for i in rows)

    def without_answer(self) -> int:
        """How many samples have no loss token (their answer fell beyond the cutoff)."""
        return sum(1 for lab in self.labels if loss_tokens(lab) == 0)

    def micro_batch(self, rows: Sequence[int], pad_id: int, device: str) -> dict[str, Any]:
        """:func:`micro_batch` of the samples ``rows``."""
        return micro_batch([self.ids[i] for i in rows], [self.labels[i] for i in rows], pad_id,
                           device)
