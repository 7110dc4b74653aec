"""BIGRec grounding: generate an answer, embed it and every item title with the LLM's last
hidden state at the final token, and rank items by L2 distance."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from goracs.evaluate.chunks import chunked
from goracs.features.cache import content_key, texts_digest
from goracs.io import atomic_save_npy
from goracs.train.model import decoder_and_head


def clean_generation(text: str) -> str:
    """The answer in a generated text: its first non-empty line without surrounding spaces or
    quotes (SeqRec answers are quoted titles; an untuned model may go on for lines)."""
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line.strip('"').strip()
    return ""


def generate_batch(model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int,
                   num_beams: int, device: str) -> list[str]:
    """Greedy (``num_beams=1``) or beam-search continuations of ``prompts``, decoded."""
    import torch

    enc = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    width = max(len(e) for e in enc)
    pad = int(tokenizer.pad_token_id)
    # Left padding, so every prompt ends at the same position and generation continues there.
    ids = torch.full((len(enc), width), pad, dtype=torch.long)
    mask = torch.zeros((len(enc), width), dtype=torch.long)
    for i, e in enumerate(enc):
        ids[i, width - len(e):] = torch.tensor(e, dtype=torch.long)
        mask[i, width - len(e):] = 1
    with torch.no_grad():
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                             max_new_tokens=max_new_tokens, num_beams=num_beams,
                             do_sample=False, num_return_sequences=1, pad_token_id=pad,
                             eos_token_id=tokenizer.eos_token_id, temperature=None,
                             top_p=None, top_k=None)
    return tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)


def last_token_states(model: Any, tokenizer: Any, texts: Sequence[str],
                      device: str) -> np.ndarray:
    """Last-layer hidden state at each text's final token, (len(texts), d) float32.

    A text with no tokens gets a row of NaN (it ranks below everything)."""
    import torch

    enc = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    keep = [i for i, e in enumerate(enc) if e]
    out: np.ndarray | None = None
    if keep:
        width = max(len(enc[i]) for i in keep)
        ids = torch.full((len(keep), width), int(tokenizer.pad_token_id), dtype=torch.long)
        mask = torch.zeros((len(keep), width), dtype=torch.long)
        for r, i in enumerate(keep):
            ids[r, :len(enc[i])] = torch.tensor(enc[i], dtype=torch.long)
            mask[r, :len(enc[i])] = 1
        decoder, _, _ = decoder_and_head(model)
        # The decoder's output is the last layer's hidden state after the final norm, the
        # same tensor as the model's hidden_states[-1], without computing any logits.
        with torch.no_grad():
            hidden = decoder(input_ids=ids.to(device),
                             attention_mask=mask.to(device)).last_hidden_state
        last = torch.tensor([len(enc[i]) - 1 for i in keep], device=hidden.device)
        states = hidden[torch.arange(len(keep), device=hidden.device), last]
        states = states.float().cpu().numpy()
        out = np.full((len(texts), states.shape[1]), np.nan, dtype=np.float32)
        out[keep] = states
    if out is None:
        d = int(model.config.hidden_size) if hasattr(model, "config") else 1
        out = np.full((len(texts), d), np.nan, dtype=np.float32)
    return out


def embed_texts(model: Any, tokenizer: Any, texts: Sequence[str], identity: Mapping[str, Any],
                cache_dir: Path, *, batch_size: int, device: str, desc: str,
                progress: bool = True) -> np.ndarray:
    """:func:`last_token_states` of ``texts``, cached under ``cache_dir`` by a key of the texts,
    the model and adapter files and the precision; resumes chunk by chunk."""
    key = content_key({"texts": texts_digest(list(texts)), "model": identity["model_files"],
                       "adapter": identity["adapter_files"], "dtype": identity["dtype"],
                       "what": "last-layer hidden state at the final token", "format": 1})
    final = cache_dir / f"{key}.npy"
    if final.is_file():
        return np.load(final, allow_pickle=False)
    # Short texts first: little padding. The order is undone before saving.
    order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))

    def compute(s: int, e: int) -> np.ndarray:
        return last_token_states(model, tokenizer, [texts[i] for i in order[s:e]], device)

    parts = chunked(len(texts), batch_size * 8, cache_dir / f"{key}.partial",
                    lambda s, e: np.concatenate([compute(a, min(e, a + batch_size))
                                                 for a in range(s, e, batch_size)]),
                    kind="npy", desc=desc, progress=progress)
    sorted_states = np.concatenate(parts)
    states = np.empty_like(sorted_states)
    states[np.asarray(order, dtype=np.int64)] = sorted_states
    atomic_save_npy(final, states)
    import shutil

    shutil.rmtree(cache_dir / f"{key}.partial", ignore_errors=True)
    print(f"cached {len(texts)} embeddings in {final}", file=sys.stderr)
    return states
