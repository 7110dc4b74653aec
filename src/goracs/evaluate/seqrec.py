"""SeqRec evaluation with the LLM (:func:`evaluate_seqrec`). BIGRec grounding: generate an
answer (free, or spelling catalogue titles only), embed it and every item title with the LLM's
last hidden state at the final token, and rank items by L2 distance, among each record's
sampled negatives and over the whole catalogue. Likelihood ranking
(:mod:`goracs.evaluate.likelihood`): the log-probability of each candidate's answer after the
prompt."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from goracs.cache import content_key, texts_digest
from goracs.evaluate import metrics as M
from goracs.evaluate.chunks import chunked
from goracs.evaluate.constrain import TokenTrie, answer_frame, catalogue_trie
from goracs.evaluate.context import EvalContext, Scored, pass_seconds
from goracs.evaluate.likelihood import rank_by_likelihood
from goracs.io import atomic_save_npy
from goracs.lm import decoder_and_head


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
    sorted_states = np.concatenate(parts.values)
    states = np.empty_like(sorted_states)
    states[np.asarray(order, dtype=np.int64)] = sorted_states
    atomic_save_npy(final, states)
    import shutil

    shutil.rmtree(cache_dir / f"{key}.partial", ignore_errors=True)
    print(f"cached {len(texts)} embeddings in {final}", file=sys.stderr)
    return states


def target_title(rec: Mapping[str, Any]) -> str:
    """The target title: the ``target`` field, else the output without its quotes."""
    t = rec.get("target")
    if isinstance(t, str) and t:
        return t
    return rec["output"].strip().strip('"').strip()


def evaluate_seqrec(ctx: EvalContext, catalogue: Sequence[str], embedding_cache: Path) -> Scored:
    """Score the SeqRec test records of ``ctx`` against ``catalogue`` (the item titles), by
    grounding or by likelihood as ``ctx.settings.ranking`` says.

    ``embedding_cache`` keeps the catalogue titles' embeddings across evaluations; the
    metrics are NDCG@K and HR@K among the sampled negatives (when every record has them) and
    over the full catalogue (grounding only). The scores also describe the catalogue: its
    size, its distinct titles and the targets missing from it.
    """
    test = ctx.records
    catalogue_set = set(catalogue)
    sampled = all(isinstance(r.get("negatives"), list) for r in test)
    targets = [target_title(r) for r in test]
    about = {"items": len(catalogue), "distinct_titles": len(catalogue_set),
             "targets_missing": sum(1 for t in targets if t not in catalogue_set),
             "negatives_per_sample": (len(test[0]["negatives"]) if sampled else None)}
    if ctx.settings.ranking == "likelihood":
        scored = rank_by_likelihood(ctx, targets)
    else:
        scored = _ground(ctx, catalogue, targets, sampled, embedding_cache)
    scored.doc = {"catalogue": about, **scored.doc}
    return scored


def _ground(ctx: EvalContext, catalogue: Sequence[str], targets: Sequence[str], sampled: bool,
            embedding_cache: Path) -> Scored:
    """BIGRec grounding: generate, embed, rank by L2 distance; ``sampled`` says whether every
    record has its negatives."""
    scored = Scored()
    if not sampled:
        print("note: not every test record has 'negatives'; the sampled protocol is skipped",
              file=sys.stderr)
    trie = _answer_trie(ctx, catalogue) if ctx.settings.decoding == "catalogue" else None
    t1 = time.perf_counter()
    raw, generated, resumed = _generate(ctx, trie)
    scored.seconds.update(pass_seconds("generate", time.perf_counter() - t1, resumed))
    t2 = time.perf_counter()
    emb_all, title_pos = _embed_titles(ctx, catalogue, targets, embedding_cache)
    scored.seconds["embed_titles"] = round(time.perf_counter() - t2, 3)
    t3 = time.perf_counter()
    emb_gen = _embed(ctx, generated, ctx.work / "gen-emb", "embed answers")
    scored.seconds["embed_answers"] = round(time.perf_counter() - t3, 3)
    t4 = time.perf_counter()
    rank_full, rank_sampled = _ranks(ctx, emb_gen, emb_all, title_pos, catalogue, targets,
                                     sampled)
    scored.seconds["rank"] = round(time.perf_counter() - t4, 3)
    catalogue_set = set(catalogue)
    scored.doc["metrics"] = {
        "sampled": M.ranking_metrics(rank_sampled) if sampled else None,
        "full": M.ranking_metrics(rank_full),
        "exact_match": float(np.mean([g == t for g, t in zip(generated, targets, strict=True)])),
        "answer_in_catalogue": float(np.mean([g in catalogue_set for g in generated])),
        "distinct_answers": len(set(generated)),
    }
    for j, i in enumerate(ctx.indices):
        scored.lines.append({"index": int(i), "user": ctx.records[j].get("user"),
                             "target": targets[j], "generated": generated[j],
                             "generated_raw": raw[j], "rank_sampled": rank_sampled[j],
                             "rank_full": rank_full[j]})
    return scored


def _answer_trie(ctx: EvalContext, catalogue: Sequence[str]) -> TokenTrie:
    """The token trie of catalogue decoding, with a note when ``max_new_tokens`` cuts the
    longest answer short."""
    trie = catalogue_trie(ctx.tokenizer, ctx.prompts[0], catalogue, answer_frame(ctx.records))
    longest = max(len(k) for k in trie.sequences()) + 1
    if ctx.settings.max_new_tokens < longest:
        print(f"note: the longest catalogue answer takes {longest} tokens, max-new-tokens is "
              f"{ctx.settings.max_new_tokens}; answers cut short are grounded as text",
              file=sys.stderr)
    return trie


def _generate(ctx: EvalContext,
              trie: TokenTrie | None) -> tuple[list[str], list[str], float]:
    """Each record's generated text and the answer read from it, in file order, and the
    seconds earlier attempts spent on the chunks read back; generation runs in length order,
    in resumable chunks of 4 batches."""
    tok, s = ctx.tokenizer, ctx.settings
    bs = s.batch_size

    def generate_chunk(start: int, end: int) -> list[list[Any]]:
        rows: list[list[Any]] = []
        for a in range(start, end, bs):
            new = generate_ids(ctx.model, tok, ctx.sorted_prompts(a, min(end, a + bs)),
                               max_new_tokens=s.max_new_tokens, num_beams=s.num_beams,
                               device=ctx.device,
                               allowed=None if trie is None else trie.allowed)
            rows += [[tok.decode(x, skip_special_tokens=True),
                      None if trie is None else trie.value(x)] for x in new]
        return rows

    parts = chunked(len(ctx), bs * 4, ctx.work / "generated", generate_chunk, kind="json",
                    desc="generate", progress=ctx.progress)
    rows_sorted = [g for part in parts.values for g in part]
    raw = [""] * len(ctx)
    spelt: list[str | None] = [None] * len(ctx)
    for j, i in enumerate(ctx.order):
        raw[i], spelt[i] = rows_sorted[j]
    # A catalogue answer is its title exactly (a title may itself start with a quote, which
    # clean_generation would strip); free text, or an answer cut short, is cleaned.
    generated = [t if t is not None else clean_generation(g)
                 for g, t in zip(raw, spelt, strict=True)]
    return raw, generated, parts.resumed_seconds


def _embed(ctx: EvalContext, texts: Sequence[str], cache_dir: Path, desc: str) -> np.ndarray:
    return embed_texts(ctx.model, ctx.tokenizer, texts, ctx.identity, cache_dir,
                       batch_size=ctx.settings.embed_batch_size, device=ctx.device, desc=desc,
                       progress=ctx.progress)


def _embed_titles(ctx: EvalContext, catalogue: Sequence[str], targets: Sequence[str],
                  embedding_cache: Path) -> tuple[np.ndarray, dict[str, int]]:
    """Embeddings of the catalogue's titles (cached in ``embedding_cache``) and of the
    targets and negatives outside it, and each title's row among them."""
    titles = sorted(set(catalogue))
    title_pos = {t: k for k, t in enumerate(titles)}
    extra = sorted({t for r, tg in zip(ctx.records, targets, strict=True)
                    for t in [tg, *(r.get("negatives") or [])] if t not in title_pos})
    emb_titles = _embed(ctx, titles, embedding_cache, "embed titles")
    if not extra:
        return emb_titles, title_pos
    emb_extra = _embed(ctx, extra, ctx.work / "extra", "embed other titles")
    for t in extra:
        title_pos[t] = len(title_pos)
    return np.concatenate([emb_titles, emb_extra]), title_pos


def _ranks(ctx: EvalContext, emb_gen: np.ndarray, emb_all: np.ndarray,
           title_pos: Mapping[str, int], catalogue: Sequence[str], targets: Sequence[str],
           sampled: bool) -> tuple[list[int | None], list[int | None]]:
    """Each target's rank by the L2 distance of its title to the answer: over the full
    catalogue, and among the record's sampled candidates (None without them)."""
    cat_rows = np.asarray([title_pos[t] for t in catalogue], dtype=np.int64)
    rank_full: list[int | None] = []
    rank_sampled: list[int | None] = []
    d_full = M.l2_distances(emb_gen, emb_all[cat_rows])
    for j, rec in enumerate(ctx.records):
        q = emb_gen[j:j + 1]
        rank_full.append(M.rank_among_titles(d_full[j], catalogue, targets[j]))
        if sampled:
            cands = [targets[j], *rec["negatives"]]
            rows = np.asarray([title_pos[t] for t in cands], dtype=np.int64)
            d = M.l2_distances(q, emb_all[rows])[0]
            rank_sampled.append(M.rank_among_titles(d, cands, targets[j]))
        else:
            rank_sampled.append(None)
    return rank_full, rank_sampled
