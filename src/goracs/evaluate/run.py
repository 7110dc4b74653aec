"""Evaluating a model (with or without an adapter) on a prepared data folder.

Writes ``OUT/predictions.jsonl`` (one line per test sample, enough to recompute every metric
with :mod:`goracs.evaluate.metrics`) and then ``OUT/metrics.json`` (the metrics with the model,
adapter, data and settings), both atomically. Model passes run in chunks kept in
``.OUT.goracs-partial/.work-KEY`` beside ``OUT`` so an interrupted evaluation resumes; the
outputs are written there too and swapped in as ``OUT`` when complete (:mod:`goracs.outputs`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from goracs.cache import content_key, texts_digest
from goracs.errors import GoracsError
from goracs.evaluate import metrics as M
from goracs.evaluate.chunks import chunked
from goracs.evaluate.constrain import answer_frame, answer_tokens, catalogue_trie
from goracs.evaluate.ctr import answer_token_ids, p_yes_batch, reusable_prefix
from goracs.evaluate.seqrec import (
    alone_log_likelihood,
    answer_log_likelihoods,
    clean_generation,
    embed_texts,
    generate_ids,
    likelihood_prefix,
)
from goracs.io import atomic_write_json, atomic_write_text, read_json
from goracs.lm import load_lm, pick_device, torch_dtype
from goracs.outputs import OutputPlace
from goracs.paths import cache_root
from goracs.records import ctr_labels, load_records, render_prompt

DECODINGS = ("free", "catalogue")
RANKINGS = ("grounding", "likelihood")


@dataclass(frozen=True)
class EvalSettings:
    """How the test set is scored. ``max_test`` keeps a seeded random subset of the test
    records (``None``: all); ``batch_size`` is the number of prompts per forward or generate
    call; ``num_beams=1`` is greedy decoding."""

    max_test: int | None = None
    seed: int = 0
    batch_size: int = 8
    max_new_tokens: int = 32
    num_beams: int = 1
    embed_batch_size: int = 32
    dtype: str = "fp32"
    decoding: str = "free"
    ranking: str = "grounding"

    def validate(self) -> EvalSettings:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise GoracsError(f"seed must be an integer >= 0, got {self.seed}")
        if self.max_test is not None and self.max_test < 1:
            raise GoracsError(f"max-test must be at least 1, got {self.max_test}")
        for name in ("batch_size", "max_new_tokens", "num_beams", "embed_batch_size"):
            if getattr(self, name) < 1:
                raise GoracsError(f"{name.replace('_', '-')} must be at least 1, got "
                                  f"{getattr(self, name)}")
        if self.dtype not in ("fp32", "bf16"):
            raise GoracsError(f"dtype must be fp32 or bf16, got {self.dtype!r}")
        if self.decoding not in DECODINGS:
            raise GoracsError(f"decoding must be one of {', '.join(DECODINGS)}, got "
                              f"{self.decoding!r}")
        if self.ranking not in RANKINGS:
            raise GoracsError(f"ranking must be one of {', '.join(RANKINGS)}, got "
                              f"{self.ranking!r}")
        return self


def sample_test_indices(n: int, max_test: int | None, seed: int) -> np.ndarray:
    """Indices of the test records scored: all, or ``max_test`` drawn without replacement with
    ``seed`` and kept in file (time) order, so the subset spans the whole test period."""
    if max_test is None or max_test >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_test, replace=False))


def _load_items(data_dir: Path) -> list[str]:
    p = data_dir / "items.json"
    items = read_json(p, "the SeqRec catalogue of item titles")
    if not isinstance(items, list) or not items or not all(isinstance(t, str) for t in items):
        raise GoracsError(f"{p}: expected a non-empty JSON list of title strings")
    return items


def _target_title(rec: Mapping[str, Any]) -> str:
    """The target title: the ``target`` field, else the output without its quotes."""
    t = rec.get("target")
    if isinstance(t, str) and t:
        return t
    return rec["output"].strip().strip('"').strip()


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not np.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    return x


def evaluate(
    data_dir: str | os.PathLike,
    task: str,
    out: str | os.PathLike,
    settings: EvalSettings,
    *,
    model: str | None = None,
    adapter: str | os.PathLike | None = None,
    device: str = "auto",
    progress: bool = True,
    embedding_cache: str | os.PathLike | None = None,
    share_prefix: bool = True,
) -> dict[str, Any]:
    """Score the test records of ``data_dir`` and write ``metrics.json`` and
    ``predictions.jsonl`` into ``out``.

    Parameters
    ----------
    data_dir : path
        A prepared folder (``test.json``; ``items.json`` for SeqRec).
    task : {"seqrec", "ctr"}
    settings : EvalSettings
    model, adapter : optional
        Base model (the packaged SmolLM2 by default) and a peft adapter folder.
    embedding_cache : path, optional
        Where catalogue title embeddings are cached (default: ``title-embeddings`` under
        :func:`goracs.paths.cache_root`).
    share_prefix : bool
        CTR scoring, and likelihood ranking in float32, run the prompt tokens that every test
        record shares once and continue each pass from their key/value cache
        (:mod:`goracs.evaluate.prefix`), after checking on a few records that the scores are
        those of plain passes; False scores every prompt whole. The scores agree up to float
        rounding either way, so the setting is no part of the run's key. (Likelihood ranking
        in bfloat16 always scores whole prompts: there the prefix saved 4% and its rounding
        moved the target's rank by 1-2 places in half the records, docs/results/README.md.)

    Returns
    -------
    dict
        The content of ``metrics.json``.
    """
    settings.validate()
    data_dir = Path(data_dir)
    out = Path(out)
    # checked before any work; the outputs are written beside it and swapped in whole
    place = OutputPlace(out, "evaluate", inputs=[data_dir, adapter]).check()
    test_path = data_dir / "test.json"
    records = load_records(test_path)
    idx = sample_test_indices(len(records), settings.max_test, settings.seed)
    test = [records[i] for i in idx]
    if task == "ctr":
        labels = ctr_labels(test, str(test_path))
    elif task != "seqrec":
        raise GoracsError(f"task must be seqrec or ctr, got {task!r}")
    dev = pick_device(device)
    t0 = time.perf_counter()
    lm, tok, identity = load_lm(model, adapter, dtype=settings.dtype, device=dev)
    lm.eval()
    t_load = time.perf_counter() - t0
    prompts = [render_prompt(r, False) for r in test]
    run_key = content_key({"task": task, "settings": asdict(settings),
                           "prompts": texts_digest(prompts), "model": identity["model_files"],
                           "adapter": identity["adapter_files"], "device": dev, "format": 1})
    # The model passes' chunks live in the partial folder, keyed by everything that shapes
    # them: an interrupted evaluation resumes from them, another one starts afresh.
    part = place.begin(keep={f".work-{run_key}"})
    work = part / f".work-{run_key}"
    legacy = out / f".work-{run_key}"  # where earlier versions kept them
    if legacy.is_dir() and not work.exists():
        os.rename(legacy, work)
    # Prompts of similar length share a batch (little padding); results return to file order.
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    seconds: dict[str, float] = {"load_model": round(t_load, 3)}
    doc: dict[str, Any] = {
        "task": task, "model": identity["model"], "model_files": identity["model_files"],
        "adapter": identity["adapter"], "adapter_files": identity["adapter_files"],
        "data": {"dir": str(data_dir), "test_records": len(records), "scored": len(test),
                 "test_digest": texts_digest(prompts)},
        "settings": {**asdict(settings), "device": dev},
    }
    lines: list[dict[str, Any]] = []
    if task == "ctr":
        yes_id, no_id = answer_token_ids(tok, test[0])
        t1 = time.perf_counter()
        # Set up on the first chunk computed: a run resumed with every chunk done needs none.
        shared: dict[str, Any] = {}

        def score_chunk(s: int, e: int) -> np.ndarray:
            if "prefix" not in shared:
                shared["prefix"] = (reusable_prefix(lm, tok, prompts, yes_id, no_id, dev)
                                    if share_prefix else None)
            bs = settings.batch_size
            return np.concatenate([
                p_yes_batch(lm, tok, [prompts[order[i]] for i in range(a, min(e, a + bs))],
                            yes_id, no_id, dev, shared["prefix"])
                for a in range(s, e, bs)])

        parts = chunked(len(test), settings.batch_size * 8, work / "p_yes", score_chunk,
                        kind="npy", desc="score ctr", progress=progress)
        p_sorted = np.concatenate(parts)
        p = np.empty_like(p_sorted)
        p[np.asarray(order, dtype=np.int64)] = p_sorted
        seconds["score"] = round(time.perf_counter() - t1, 3)
        doc["metrics"] = M.ctr_metrics(labels, p)
        doc["answer_tokens"] = {"Yes": yes_id, "No": no_id,
                                "Yes_text": tok.decode([yes_id]), "No_text": tok.decode([no_id])}
        for j, i in enumerate(idx):
            rec = test[j]
            lines.append({"index": int(i), "user": rec.get("user"), "target": rec.get("target"),
                          "label": int(labels[j]), "p_yes": float(p[j])})
    else:
        cache = Path(embedding_cache) if embedding_cache is not None \
            else cache_root() / "title-embeddings"
        _evaluate_seqrec(lm, tok, identity, test, idx, prompts, order, data_dir, work, cache,
                         settings, dev, progress, doc, lines, seconds, share_prefix)
    seconds["total"] = round(time.perf_counter() - t0, 3)
    doc["seconds"] = seconds
    doc = _jsonable(doc)
    text = "".join(json.dumps(_jsonable(x), ensure_ascii=False) + "\n" for x in lines)
    atomic_write_text(part / "predictions.jsonl", text)
    atomic_write_json(part / "metrics.json", doc)
    shutil.rmtree(work, ignore_errors=True)
    place.commit()
    return doc


def _evaluate_seqrec(lm: Any, tok: Any, identity: Mapping[str, Any], test: Sequence[Mapping],
                     idx: np.ndarray, prompts: Sequence[str], order: Sequence[int],
                     data_dir: Path, work: Path, cache: Path, settings: EvalSettings, dev: str,
                     progress: bool, doc: dict[str, Any], lines: list[dict[str, Any]],
                     seconds: dict[str, float], share_prefix: bool = True) -> None:
    catalogue = _load_items(data_dir)
    catalogue_set = set(catalogue)
    sampled = all(isinstance(r.get("negatives"), list) for r in test)
    targets = [_target_title(r) for r in test]
    doc["catalogue"] = {"items": len(catalogue), "distinct_titles": len(catalogue_set),
                        "targets_missing": sum(1 for t in targets if t not in catalogue_set),
                        "negatives_per_sample": (len(test[0]["negatives"]) if sampled else None)}
    if settings.ranking == "likelihood":
        _rank_by_likelihood(lm, tok, test, idx, prompts, targets, work, dev, progress, doc,
                            lines, seconds, share_prefix)
        return
    if not sampled:
        print("note: not every test record has 'negatives'; the sampled protocol is skipped",
              file=sys.stderr)
    trie = None
    if settings.decoding == "catalogue":
        trie = catalogue_trie(tok, prompts[0], catalogue, answer_frame(test))
        longest = max(len(k) for k in trie.sequences()) + 1
        if settings.max_new_tokens < longest:
            print(f"note: the longest catalogue answer takes {longest} tokens, max-new-tokens is "
                  f"{settings.max_new_tokens}; answers cut short are grounded as text",
                  file=sys.stderr)
    t1 = time.perf_counter()
    bs = settings.batch_size

    def generate_chunk(s: int, e: int) -> list[list[Any]]:
        rows: list[list[Any]] = []
        for a in range(s, e, bs):
            new = generate_ids(lm, tok, [prompts[order[i]] for i in range(a, min(e, a + bs))],
                               max_new_tokens=settings.max_new_tokens,
                               num_beams=settings.num_beams, device=dev,
                               allowed=None if trie is None else trie.allowed)
            rows += [[tok.decode(x, skip_special_tokens=True),
                      None if trie is None else trie.value(x)] for x in new]
        return rows

    parts = chunked(len(test), bs * 4, work / "generated", generate_chunk, kind="json",
                    desc="generate", progress=progress)
    rows_sorted = [g for part in parts for g in part]
    raw = [""] * len(test)
    spelt: list[str | None] = [None] * len(test)
    for j, i in enumerate(order):
        raw[i], spelt[i] = rows_sorted[j]
    # A catalogue answer is its title exactly (a title may itself start with a quote, which
    # clean_generation would strip); free text, or an answer cut short, is cleaned.
    generated = [t if t is not None else clean_generation(g)
                 for g, t in zip(raw, spelt, strict=True)]
    seconds["generate"] = round(time.perf_counter() - t1, 3)

    t2 = time.perf_counter()
    titles = sorted(set(catalogue))
    title_pos = {t: k for k, t in enumerate(titles)}
    extra = sorted({t for r, tg in zip(test, targets, strict=True)
                    for t in [tg, *(r.get("negatives") or [])] if t not in title_pos})
    emb_titles = embed_texts(lm, tok, titles, identity, cache,
                             batch_size=settings.embed_batch_size, device=dev,
                             desc="embed titles", progress=progress)
    if extra:
        emb_extra = embed_texts(lm, tok, extra, identity, work / "extra",
                                batch_size=settings.embed_batch_size, device=dev,
                                desc="embed other titles", progress=progress)
        emb_all = np.concatenate([emb_titles, emb_extra])
        for t in extra:
            title_pos[t] = len(title_pos)
    else:
        emb_all = emb_titles
    seconds["embed_titles"] = round(time.perf_counter() - t2, 3)
    t3 = time.perf_counter()
    emb_gen = embed_texts(lm, tok, generated, identity, work / "gen-emb",
                          batch_size=settings.embed_batch_size, device=dev,
                          desc="embed answers", progress=progress)
    seconds["embed_answers"] = round(time.perf_counter() - t3, 3)

    t4 = time.perf_counter()
    cat_rows = np.asarray([title_pos[t] for t in catalogue], dtype=np.int64)
    rank_full: list[int | None] = []
    rank_sampled: list[int | None] = []
    d_full = M.l2_distances(emb_gen, emb_all[cat_rows])
    for j, rec in enumerate(test):
        q = emb_gen[j:j + 1]
        rank_full.append(M.rank_among_titles(d_full[j], catalogue, targets[j]))
        if sampled:
            cands = [targets[j], *rec["negatives"]]
            rows = np.asarray([title_pos[t] for t in cands], dtype=np.int64)
            d = M.l2_distances(q, emb_all[rows])[0]
            rank_sampled.append(M.rank_among_titles(d, cands, targets[j]))
        else:
            rank_sampled.append(None)
    seconds["rank"] = round(time.perf_counter() - t4, 3)
    doc["metrics"] = {
        "sampled": M.ranking_metrics(rank_sampled) if sampled else None,
        "full": M.ranking_metrics(rank_full),
        "exact_match": float(np.mean([g == t for g, t in zip(generated, targets, strict=True)])),
        "answer_in_catalogue": float(np.mean([g in catalogue_set for g in generated])),
        "distinct_answers": len(set(generated)),
    }
    for j, i in enumerate(idx):
        lines.append({"index": int(i), "user": test[j].get("user"), "target": targets[j],
                      "generated": generated[j], "generated_raw": raw[j],
                      "rank_sampled": rank_sampled[j], "rank_full": rank_full[j]})


def _check_packed_scoring(lm: Any, tok: Any, prompt: str, seqs: Sequence[Sequence[int]],
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


def _rank_by_likelihood(lm: Any, tok: Any, test: Sequence[Mapping], idx: np.ndarray,
                        prompts: Sequence[str], targets: Sequence[str],
                        work: Path, dev: str, progress: bool, doc: dict[str, Any],
                        lines: list[dict[str, Any]], seconds: dict[str, float],
                        share_prefix: bool = True) -> None:
    """Rank each record's target among its sampled negatives by log P(answer | prompt); with
    ``share_prefix`` and a float32 model, the prompt tokens all records share run once
    (checked first)."""
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
    _check_packed_scoring(lm, tok, prompts[0], probe, dev)
    # In bfloat16 the prefix saves little (4%) and rounds differently enough to move targets'
    # ranks; those runs, all committed likelihood runs among them, score whole prompts.
    share_prefix = share_prefix and next(lm.parameters()).dtype == torch_dtype("fp32")
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

    parts = chunked(len(test), 8, work / "likelihood", score_chunk, kind="npy",
                    desc="score candidates", progress=progress)
    scored = np.concatenate(parts)
    seconds["score"] = round(time.perf_counter() - t1, 3)
    rank_sampled = [int(r) for r in scored[:, 1]]
    doc["metrics"] = {"sampled": M.ranking_metrics(rank_sampled), "full": None}
    for j, i in enumerate(idx):
        lines.append({"index": int(i), "user": test[j].get("user"), "target": targets[j],
                      "target_log_likelihood": float(scored[j, 0]),
                      "rank_sampled": rank_sampled[j], "rank_full": None})
