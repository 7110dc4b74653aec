"""LLM embeddings: the scoring model's mean final hidden state over each sample's prompt.

**LLM embeddings** ride along on request: the mean of the final hidden state (after the last
norm) over each sample's prompt tokens, read off the forward pass the gradients already take,
so that selection can measure distances in the geometry of the model being fine-tuned.
:func:`embed_prompts` gives the same vectors for samples that need no gradient (the
validation set), in a forward pass alone, through the same route, adapter and shared prefix.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from goracs.errors import GoracsError
from goracs.features.batches import pad_batch, unsort_rows
from goracs.features.decoder import SplitDecoder
from goracs.features.prefix import MIN_SHARED_TOKENS


def prompt_means(hidden: Any, starts: np.ndarray | None) -> np.ndarray:
    """Mean of each row's states over its prompt positions ``0 .. starts[b] - 1``, as a
    (B, d) float32 array."""
    import torch

    if starts is None:
        raise GoracsError("LLM embeddings need each sample's response start")
    out = torch.stack([hidden[b, :int(starts[b])].float().mean(dim=0)
                       for b in range(hidden.shape[0])])
    return out.cpu().numpy().astype(np.float32)


def check_prompt_ends(seqs: Sequence[np.ndarray], prompt_ends: Sequence[int]) -> np.ndarray:
    """``prompt_ends`` as an int64 array, checked against the samples ``seqs``."""
    ends = np.asarray(prompt_ends, dtype=np.int64).reshape(-1)
    if len(seqs) == 0:
        raise GoracsError("no samples to embed")
    if ends.shape[0] != len(seqs):
        raise GoracsError(f"{ends.shape[0]} prompt ends for {len(seqs)} samples")
    bad = np.flatnonzero((ends < 1) | (ends > np.array([len(s) for s in seqs])))
    if bad.size:
        raise GoracsError(f"sample {int(bad[0])}: its prompt end {int(ends[bad[0]])} is "
                          "outside its tokens")
    return ends


def embed_prompts(seqs: Sequence[np.ndarray], ends: np.ndarray, order: np.ndarray, *,
                  model: Any, split: SplitDecoder | None, shared: int, batch_size: int,
                  pad_id: int, device: Any, progress: bool = True) -> np.ndarray:
    """LLM embeddings (N, d) float32 of ``seqs``, forward only.

    Parameters
    ----------
    seqs : sequence of int arrays
        Token ids.
    ends : (N,) int64 array
        Each sample's prompt end (:func:`check_prompt_ends`).
    order : (N,) int array
        The processing order (batches of similar length).
    model : causal LM
        Runs the plain route when ``split`` is None.
    split : SplitDecoder, optional
        The direct route, when the scorer takes it.
    shared : int
        Tokens every sample shares that may run once (0: none); cut short of every prompt
        end.
    batch_size, pad_id, device
        Samples per forward pass, the padding token and the model's device.
    progress : bool
        A tqdm bar on stderr.
    """
    import torch
    from tqdm import tqdm

    start = min(shared, int(ends.min()) - 1)
    prefix = None
    if split is not None and start >= MIN_SHARED_TOKENS:
        prefix = split.prefix_pass(seqs[0][:start].tolist())
    else:
        start = 0
    pieces = []
    with torch.no_grad(), tqdm(total=len(seqs), desc="LLM embeddings", unit="sample",
                               disable=not progress, file=sys.stderr,
                               dynamic_ncols=True) as bar:
        for b in range(0, len(seqs), batch_size):
            part = order[b:b + batch_size]
            batch = [seqs[i] for i in part]
            x, mask = pad_batch(batch, start, pad_id, device)
            if split is not None:
                hidden = split.hidden(x, mask, prefix)
            else:
                hidden = model(input_ids=x, attention_mask=mask,
                               output_hidden_states=True).hidden_states[-1]
            pieces.append(prompt_means(hidden, ends[part]))
            bar.update(len(batch))
    out = unsort_rows(pieces, order)
    if not np.isfinite(out).all():
        raise GoracsError("LLM embeddings contain NaN or inf (try --dtype fp32)")
    return out
