"""Likelihood ranking of SeqRec candidates: each record's target ranks among its sampled
negatives by the model's log-probability of the answer after the prompt.

Every candidate of a record goes through the model in one packed pass
(:func:`candidate_tree`, :func:`answer_log_likelihoods`), checked once against plain passes
(:func:`alone_log_likelihood`); in float32 the prompt tokens all records share can run once
(:func:`likelihood_prefix`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from goracs.errors import GoracsError
from goracs.evaluate import metrics as M
from goracs.evaluate.chunks import chunked
from goracs.evaluate.constrain import answer_frame, answer_tokens
from goracs.evaluate.context import EvalContext, Scored, pass_seconds
from goracs.evaluate.prefix import CACHE_ERRORS, SharedPrefix, note_plain, prompts_prefix
from goracs.lm import decoder_and_head, torch_dtype


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


def check_packed_scoring(lm: Any, tok: Any, prompt: str, seqs: Sequence[Sequence[int]],
                         dev: str) -> None:
    """Stop unless the packed pass gives each answer's token ids ``seqs`` the log-likelihood a
    plain pass gives (a model that ignores custom attention masks or position ids would not)."""
    packed = answer_log_likelihoods(lm, tok, prompt, seqs, dev)
    # Rounding differs between the two passes (other shapes, other summation orders): ~1e-4
    # nats in fp32, up to a few tenths in bf16. A model that let answers see each other, or
    # placed them at the wrong positions, would give the second and third answers other
    # contexts than the plain pass does.
    low = next(lm.parameters()).dtype != torch_dtype("fp32")
    slack = (0.5, 0.05) if low else (0.05, 0.01)
    for seq, got in zip(seqs, packed, strict=True):
        want = alone_log_likelihood(lm, tok, prompt, seq, dev)
        if abs(got - want) > slack[0] + slack[1] * abs(want):
            raise GoracsError(f"this model does not score packed candidates as it scores them "
                              f"alone ({got:.3f} against {want:.3f}); likelihood ranking "
                              "needs a model that honours a 4D attention mask and position ids")


def rank_by_likelihood(ctx: EvalContext, targets: Sequence[str]) -> Scored:
    """Rank each record's target (``targets``, one per record) among its sampled negatives by
    log P(answer | prompt): the sampled protocol only, in resumable chunks of 8 records.

    The packed pass is checked on the first record's first candidates; with
    ``ctx.share_prefix`` and a float32 model, the prompt tokens all records share run once
    (checked first).
    """
    test, prompts, lm, tok, dev = ctx.records, ctx.prompts, ctx.model, ctx.tokenizer, ctx.device
    if not all(isinstance(r.get("negatives"), list) and r["negatives"] for r in test):
        raise GoracsError("likelihood ranking scores the sampled candidates: every test record "
                          "needs a non-empty 'negatives' list")
    before, after = answer_frame(test)
    eos = tok.eos_token_id
    if eos is None:
        raise GoracsError("the tokenizer has no end-of-sequence token; an answer's likelihood "
                          "includes its end")

    def candidate_ids(j: int, titles: Sequence[str]) -> list[list[int]]:
        """Token ids of each title's answer after record ``j``'s prompt, with its end."""
        return [a + [int(eos)] for a in
                answer_tokens(tok, prompts[j], [before + t + after for t in titles])]

    t1 = time.perf_counter()
    probe = candidate_ids(0, [targets[0], *test[0]["negatives"][:2]])
    check_packed_scoring(lm, tok, prompts[0], probe, dev)
    # In bfloat16 the prefix saves little (4%) and rounds differently enough to move targets'
    # ranks; those runs, all committed likelihood runs among them, score whole prompts.
    share_prefix = ctx.share_prefix and next(lm.parameters()).dtype == torch_dtype("fp32")
    # Set up on the first chunk computed: a run resumed with every chunk done needs none.
    shared: dict[str, Any] = {}

    def score_chunk(s: int, e: int) -> np.ndarray:
        if "prefix" not in shared:
            shared["prefix"] = (likelihood_prefix(lm, tok, prompts, prompts[0], probe, dev)
                                if share_prefix else None)
        out = []
        for j in range(s, e):
            cands = [targets[j], *test[j]["negatives"]]
            seqs = candidate_ids(j, cands)
            ll = answer_log_likelihoods(lm, tok, prompts[j], seqs, dev, shared["prefix"])
            # Higher likelihood ranks first: rank by the negated log-likelihood as a distance.
            rank = M.rank_among_titles(-ll, cands, targets[j])
            assert rank is not None  # the target is the first candidate
            out.append([float(ll[0]), rank])
        return np.asarray(out, dtype=np.float64)

    parts = chunked(len(test), 8, ctx.work / "likelihood", score_chunk, kind="npy",
                    desc="score candidates", progress=ctx.progress)
    scored_rows = np.concatenate(parts.values)
    scored = Scored(seconds=pass_seconds("score", time.perf_counter() - t1,
                                         parts.resumed_seconds))
    rank_sampled = [int(r) for r in scored_rows[:, 1]]
    scored.doc["metrics"] = {"sampled": M.ranking_metrics(rank_sampled), "full": None}
    for j, i in enumerate(ctx.indices):
        scored.lines.append({"index": int(i), "user": test[j].get("user"),
                             "target": targets[j],
                             "target_log_likelihood": float(scored_rows[j, 0]),
                             "rank_sampled": rank_sampled[j], "rank_full": None})
    return scored
