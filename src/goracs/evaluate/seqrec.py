"""SeqRec scoring with the LLM. BIGRec grounding: generate an answer, embed it and every item
title with the LLM's last hidden state at the final token, and rank items by L2 distance.
Likelihood ranking: the log-probability of each candidate's answer after the prompt."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from goracs.cache import content_key, texts_digest
from goracs.evaluate.chunks import chunked
from goracs.evaluate.prefix import CACHE_ERRORS, SharedPrefix, note_plain, prompts_prefix
from goracs.io import atomic_save_npy
from goracs.lm import decoder_and_head, torch_dtype


def clean_generation(text: str) -> str:
    """The answer in a generated text: its first non-empty line without surrounding spaces or
    quotes (SeqRec answers are quoted titles; an untuned model may go on for lines)."""
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line.strip('"').strip()
    return ""


def generate_ids(model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int,
                 num_beams: int, device: str,
                 allowed: Callable[[list[int]], list[int]] | None = None) -> list[list[int]]:
    """The new token ids of greedy (``num_beams=1``) or beam-search continuations of
    ``prompts``. ``allowed`` maps the ids generated so far to the ids the next step may take
    (e.g. :meth:`goracs.evaluate.constrain.TokenTrie.allowed`); None leaves decoding free."""
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
    extra: dict[str, Any] = {}
    if allowed is not None:
        extra["prefix_allowed_tokens_fn"] = lambda _row, seq: allowed(seq[width:].tolist())
    with torch.no_grad():
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                             max_new_tokens=max_new_tokens, num_beams=num_beams,
                             do_sample=False, num_return_sequences=1, pad_token_id=pad,
                             eos_token_id=tokenizer.eos_token_id, temperature=None,
                             top_p=None, top_k=None, **extra)
    return out[:, width:].cpu().tolist()


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


def candidate_tree(prompt_ids: Sequence[int], answers: Sequence[Sequence[int]]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                              np.ndarray]:
    """One packed sequence that scores every answer after one shared prompt in one pass.

    The prompt comes once; each answer but its last token follows, with positions restarting
    where the prompt ends, and attends to the prompt and to its own earlier tokens only, so
    each answer sees exactly what it would see alone after the prompt.

    Returns
    -------
    ids, positions : (T,) int64
    visible : (T, T) bool
        ``visible[i, j]``: token ``i`` may attend to token ``j``.
    rows : (A,) int64
        For each answer token (all answers concatenated), the packed position whose output
        predicts it (the prompt's last token for an answer's first token).
    targets, owner : (A,) int64
        The answer tokens, and which answer each one belongs to.
    """
    p = len(prompt_ids)
    if p == 0:
        raise ValueError("the prompt has no tokens")
    if any(len(a) == 0 for a in answers):
        raise ValueError("an answer has no tokens")
    ids = [int(t) for t in prompt_ids]
    pos = list(range(p))
    group = [-1] * p
    rows: list[int] = []
    targets: list[int] = []
    owner: list[int] = []
    for c, ans in enumerate(answers):
        start = len(ids)
        body = [int(t) for t in ans[:-1]]
        ids += body
        pos += range(p, p + len(body))
        group += [c] * len(body)
        rows += [p - 1, *range(start, start + len(body))]
        targets += [int(t) for t in ans]
        owner += [c] * len(ans)
    g = np.asarray(group)
    n = len(ids)
    causal = np.tri(n, dtype=bool)
    same = (g[None, :] == -1) | (g[None, :] == g[:, None])
    return (np.asarray(ids, dtype=np.int64), np.asarray(pos, dtype=np.int64), causal & same,
            np.asarray(rows, dtype=np.int64), np.asarray(targets, dtype=np.int64),
            np.asarray(owner, dtype=np.int64))


def answer_log_likelihoods(model: Any, tokenizer: Any, prompt: str,
                           answers: Sequence[Sequence[int]], device: str,
                           prefix: SharedPrefix | None = None) -> np.ndarray:
    """log P(answer | prompt) under ``model`` for each answer's token ids (the sum over its
    tokens, end-of-sequence included if the ids include it), float64 of shape (len(answers),).

    All answers go through the model in one forward pass (:func:`candidate_tree`). With a
    ``prefix`` the prompt starts with (:func:`likelihood_prefix`), that pass feeds only the
    tokens after it and continues from its key/value cache; every packed token sees the whole
    prefix, at the positions it has in a plain pass.
    """
    import torch

    from goracs.lm import head_logits

    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    ids, pos, visible, rows, targets, owner = candidate_tree(prompt_ids, answers)
    start = len(prefix) if prefix is not None and prefix.matches(prompt_ids) else 0
    decoder, head, cap = decoder_and_head(model)
    dtype = next(model.parameters()).dtype
    # Queries are the packed tokens after the prefix; keys are all packed tokens, the prefix's
    # coming from the cache. The prefix precedes everything, so every query may see it.
    mask = torch.zeros((1, 1, len(ids) - start, len(ids)), dtype=dtype)
    mask.masked_fill_(~torch.from_numpy(visible[start:]), torch.finfo(dtype).min)
    extra: dict[str, Any] = {}
    if start:
        assert prefix is not None
        extra = {"cache": prefix.cache(1), "use_cache": True}
    with torch.no_grad():
        hidden = decoder(input_ids=torch.from_numpy(ids[start:])[None].to(device),
                         attention_mask=mask.to(device),
                         position_ids=torch.from_numpy(pos[start:])[None].to(device),
                         **extra).last_hidden_state
        logits = head_logits(head, hidden[0, torch.from_numpy(rows - start).to(device)], cap)
        logp = torch.log_softmax(logits.float(), dim=-1)
        tok_lp = logp[torch.arange(len(rows), device=logp.device),
                      torch.from_numpy(targets).to(logp.device)]
    out = np.zeros(len(answers), dtype=np.float64)
    np.add.at(out, owner, tok_lp.double().cpu().numpy())
    return out


def likelihood_prefix(model: Any, tokenizer: Any, prompts: Sequence[str], probe_prompt: str,
                      probe_answers: Sequence[Sequence[int]], device: str
                      ) -> SharedPrefix | None:
    """The token prefix all ``prompts`` share, run once, if packed scoring from it gives what
    packed scoring of the whole prompt gives; else None, with a note on stderr.

    The check scores ``probe_answers`` after ``probe_prompt`` (one of ``prompts``) both ways.
    The log-likelihoods may differ by float rounding only: 1e-3 nats + 1e-5 of their size in
    float32; in bfloat16 the two ways round differently (as two batch layouts of one pass
    do), so the check allows 0.5 nats + 5% there, the slack of the packed start-up check.

    Parameters
    ----------
    model, tokenizer
        The causal LM (with its adapter, when one is loaded) and its tokenizer.
    prompts : sequence of str
        Every prompt whose candidates will be scored.
    probe_prompt : str
        The prompt of the check.
    probe_answers : sequence of int sequences
        Answer token ids for the check (a few candidates).
    device : str
        Where the model is.

    Returns
    -------
    SharedPrefix or None
    """
    got_prefix = prompts_prefix(model, tokenizer, prompts, device)
    if got_prefix is None:
        return None
    prefix = got_prefix[0]
    try:
        got = answer_log_likelihoods(model, tokenizer, probe_prompt, probe_answers, device,
                                     prefix)
    except CACHE_ERRORS as exc:
        note_plain(f"this model cannot continue from a copied key/value cache: "
                   f"{type(exc).__name__}: {exc}")
        return None
    want = answer_log_likelihoods(model, tokenizer, probe_prompt, probe_answers, device)
    low = next(model.parameters()).dtype != torch_dtype("fp32")
    slack = (0.5, 0.05) if low else (1e-3, 1e-5)
    worst = np.abs(got - want) - (slack[0] + slack[1] * np.abs(want))
    if not np.all(np.isfinite(got)) or float(np.max(worst)) > 0:
        note_plain(f"log-likelihoods from the cache differ from a plain packed pass by up to "
                   f"{float(np.max(np.abs(got - want))):.3g} nats")
        return None
    return prefix


def alone_log_likelihood(model: Any, tokenizer: Any, prompt: str, answer: Sequence[int],
                         device: str) -> float:
    """log P(answer | prompt) from a plain forward pass of the prompt followed by the answer
    (the reference :func:`answer_log_likelihoods` must agree with)."""
    import torch

    base = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    ids = torch.tensor([list(base) + [int(t) for t in answer]], device=device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(base) - 1:-1]
        logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp[torch.arange(len(answer), device=logp.device),
                  torch.tensor([int(t) for t in answer], device=logp.device)]
    return float(picked.double().sum())
