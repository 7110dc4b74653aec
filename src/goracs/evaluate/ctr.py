"""TALLRec-style CTR scoring: P(Yes) from the Yes and No logits after the prompt.

:func:`score_ctr` scores a test set (AUC, log-loss, accuracy and one line per record). The
prompts of a task share their first ~70 tokens (the Alpaca preamble, the instruction and the
start of the input); :func:`reusable_prefix` runs them once and :func:`p_yes_batch` continues
each batch from their key/value cache (:mod:`goracs.evaluate.prefix`)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from goracs.errors import GoracsError
from goracs.evaluate import metrics as M
from goracs.evaluate.chunks import chunked
from goracs.evaluate.context import EvalContext, Scored, pass_seconds
from goracs.evaluate.prefix import CACHE_ERRORS, SharedPrefix, note_plain, prompts_prefix
from goracs.lm import decoder_and_head, head_logits, torch_dtype
from goracs.records import render_prompt


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
                device: str, prefix: SharedPrefix | None = None) -> np.ndarray:
    """P(Yes) = softmax over the (Yes, No) logits at the position after each prompt.

    Parameters
    ----------
    model, tokenizer
        The causal LM (plain or peft-wrapped) and its tokenizer.
    prompts : sequence of str
        Rendered prompts, right-padded into one batch.
    yes_id, no_id : int
        The answer tokens (:func:`answer_token_ids`).
    device : str
        Where the model is.
    prefix : SharedPrefix, optional
        Token ids all prompts start with, already run through this model
        (:func:`reusable_prefix`): only the tokens after it go through the model, continuing
        from its key/value cache. Ignored unless every prompt of the batch starts with it.

    Returns
    -------
    (len(prompts),) float64 array
    """
    import torch

    enc = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    start = len(prefix) if prefix is not None and all(prefix.matches(e) for e in enc) else 0
    lengths = [len(e) - start for e in enc]
    width = max(lengths)
    ids = torch.full((len(enc), width), int(tokenizer.pad_token_id), dtype=torch.long)
    # The mask covers the prefix (seen by every row) and each row's own tokens; right padding,
    # so a row's tokens keep the positions they have in a plain pass.
    mask = torch.zeros((len(enc), start + width), dtype=torch.long)
    mask[:, :start] = 1
    for i, e in enumerate(enc):
        ids[i, :lengths[i]] = torch.tensor(e[start:], dtype=torch.long)
        mask[i, start:start + lengths[i]] = 1
    decoder, head, cap = decoder_and_head(model)
    extra: dict[str, Any] = {}
    if start:
        assert prefix is not None
        extra = {"cache": prefix.cache(len(enc)), "use_cache": True}
    with torch.no_grad():
        hidden = decoder(input_ids=ids.to(device), attention_mask=mask.to(device), **extra
                         ).last_hidden_state
        last = torch.tensor(lengths, device=hidden.device) - 1
        rows = head_logits(head, hidden[torch.arange(len(enc), device=hidden.device), last],
                           cap).double()
    # The two-way softmax is the logistic function of the logit difference.
    return torch.sigmoid(rows[:, yes_id] - rows[:, no_id]).cpu().numpy()


def reusable_prefix(model: Any, tokenizer: Any, prompts: Sequence[str], yes_id: int,
                    no_id: int, device: str, *, probe: int = 2) -> SharedPrefix | None:
    """The token prefix all ``prompts`` share, run once, if scoring from it gives what plain
    scoring gives; else None, with a note on stderr.

    The check scores the shortest and the longest prompt (so that a row is padded), then the
    first ones up to ``probe`` in all, both ways, in one batch. P(Yes) may differ by float
    rounding only: 1e-4 in float32. In bfloat16 the two ways round differently, as two batch
    layouts of a plain pass do (on ML-1M prompts P(Yes) moves by up to 0.03 between batches
    of 8 and of 1, and by up to 0.06 between plain and prefix), so the check allows 0.1 there;
    a cache one position off moves P(Yes) by about 0.35 on the same prompts.

    Parameters
    ----------
    model, tokenizer
        The causal LM (with its adapter, when one is loaded) and its tokenizer.
    prompts : sequence of str
        Every prompt that will be scored.
    yes_id, no_id : int
        The answer tokens.
    device : str
        Where the model is.
    probe : int
        How many prompts the check scores (at least 2).

    Returns
    -------
    SharedPrefix or None
    """
    got_prefix = prompts_prefix(model, tokenizer, prompts, device)
    if got_prefix is None:
        return None
    prefix, enc = got_prefix
    by_length = sorted(range(len(prompts)), key=lambda i: (len(enc[i]), i))
    picks = list(dict.fromkeys([by_length[0], by_length[-1],
                                *range(min(probe, len(prompts)))]))[:max(2, probe)]
    sample = [prompts[i] for i in picks]
    try:
        got = p_yes_batch(model, tokenizer, sample, yes_id, no_id, device, prefix)
    except CACHE_ERRORS as exc:
        note_plain(f"this model cannot continue from a copied key/value cache: "
                   f"{type(exc).__name__}: {exc}")
        return None
    want = p_yes_batch(model, tokenizer, sample, yes_id, no_id, device)
    low = next(model.parameters()).dtype != torch_dtype("fp32")
    worst = float(np.max(np.abs(got - want)))
    if not np.all(np.isfinite(got)) or worst > (0.1 if low else 1e-4):
        note_plain(f"P(Yes) from the cache differs from a plain pass by {worst:.2g}")
        return None
    return prefix


def score_ctr(ctx: EvalContext, labels: np.ndarray) -> Scored:
    """P(Yes) of every test record of ``ctx`` and the CTR metrics against ``labels`` (0/1,
    one per record).

    The prompts are scored in length order, ``batch_size`` a pass, in resumable chunks of 8
    passes under ``ctx.work``; with ``ctx.share_prefix`` the prompt tokens all records share
    run once (:func:`reusable_prefix`, checked first).
    """
    tok = ctx.tokenizer
    bs = ctx.settings.batch_size
    yes_id, no_id = answer_token_ids(tok, ctx.records[0])
    t1 = time.perf_counter()
    # Set up on the first chunk computed: a run resumed with every chunk done needs none.
    shared: dict[str, Any] = {}

    def score_chunk(s: int, e: int) -> np.ndarray:
        if "prefix" not in shared:
            shared["prefix"] = (reusable_prefix(ctx.model, tok, ctx.prompts, yes_id, no_id,
                                                ctx.device)
                                if ctx.share_prefix else None)
        return np.concatenate([
            p_yes_batch(ctx.model, tok, ctx.sorted_prompts(a, min(e, a + bs)), yes_id, no_id,
                        ctx.device, shared["prefix"])
            for a in range(s, e, bs)])

    parts = chunked(len(ctx), bs * 8, ctx.work / "p_yes", score_chunk, kind="npy",
                    desc="score ctr", progress=ctx.progress)
    p_sorted = np.concatenate(parts.values)
    p = np.empty_like(p_sorted)
    p[np.asarray(ctx.order, dtype=np.int64)] = p_sorted
    scored = Scored(seconds=pass_seconds("score", time.perf_counter() - t1,
                                         parts.resumed_seconds))
    scored.doc["metrics"] = M.ctr_metrics(labels, p)
    scored.doc["answer_tokens"] = {"Yes": yes_id, "No": no_id, "Yes_text": tok.decode([yes_id]),
                                   "No_text": tok.decode([no_id])}
    for j, i in enumerate(ctx.indices):
        rec = ctx.records[j]
        scored.lines.append({"index": int(i), "user": rec.get("user"),
                             "target": rec.get("target"), "label": int(labels[j]),
                             "p_yes": float(p[j])})
    return scored
