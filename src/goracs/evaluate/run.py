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
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from goracs.cache import content_key, texts_digest
from goracs.errors import GoracsError
from goracs.evaluate.context import RESUMED, EvalContext, Scored
from goracs.evaluate.ctr import score_ctr
from goracs.evaluate.seqrec import evaluate_seqrec
from goracs.evaluate.settings import EvalSettings
from goracs.io import atomic_write_json, atomic_write_text, read_json
from goracs.lm import load_lm, pick_device
from goracs.outputs import OutputPlace
from goracs.paths import cache_root
from goracs.records import ctr_labels, load_records, render_prompt

__all__ = ["EvalSettings", "evaluate", "negatives_digest", "sample_test_indices"]


def sample_test_indices(n: int, max_test: int | None, seed: int) -> np.ndarray:
    """Indices of the test records scored: all, or ``max_test`` drawn without replacement with
    ``seed`` and kept in file (time) order, so the subset spans the whole test period."""
    if max_test is None or max_test >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_test, replace=False))


def negatives_digest(test: Sequence[Mapping[str, Any]]) -> str | None:
    """The digest of the scored records' SeqRec negatives, in order, or None when a record has
    none. The prompts do not show them, so two folders with the same test prompts (another
    ``prepare --seed`` or ``--negative-sampling``) are told apart by this."""
    lists = [r.get("negatives") for r in test]
    if not lists or not all(isinstance(x, list) for x in lists):
        return None
    return texts_digest([json.dumps(x, ensure_ascii=False) for x in lists])


def data_record(data_dir: Path, n_records: int, prompts: Sequence[str],
                negatives: str | None) -> dict[str, Any]:
    """The ``data`` entry of ``metrics.json``: the folder, its test records, those scored, and
    the digests of their prompts and (when they have them) negatives, which ``goracs compare``
    checks."""
    data: dict[str, Any] = {"dir": str(data_dir), "test_records": n_records,
                            "scored": len(prompts), "test_digest": texts_digest(prompts)}
    if negatives is not None:
        data["negatives_digest"] = negatives
    return data


def _load_items(data_dir: Path) -> list[str]:
    p = data_dir / "items.json"
    items = read_json(p, "the SeqRec catalogue of item titles")
    if not isinstance(items, list) or not items or not all(isinstance(t, str) for t in items):
        raise GoracsError(f"{p}: expected a non-empty JSON list of title strings")
    return items


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
        in bfloat16 always scores whole prompts: there the prefix saves about 4% and its
        rounding moves the target's rank by 1-2 places in half the records,
        docs/results/README.md.)

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
    negatives = negatives_digest(test) if task == "seqrec" else None
    run_key = _run_key(task, settings, prompts, negatives, identity, dev)
    # The model passes' chunks live in the partial folder, keyed by everything that shapes
    # them: an interrupted evaluation resumes from them, another one starts afresh.
    part = place.begin(keep={f".work-{run_key}"})
    work = _work_folder(part, out, run_key)
    doc = _header(task, identity, data_dir, len(records), prompts, negatives, settings, dev)
    # Prompts of similar length share a batch (little padding); results return to file order.
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    ctx = EvalContext(model=lm, tokenizer=tok, identity=identity, records=test, indices=idx,
                      prompts=prompts, order=order, work=work, settings=settings, device=dev,
                      progress=progress, share_prefix=share_prefix)
    if task == "ctr":
        scored = score_ctr(ctx, labels)
    else:
        cache = Path(embedding_cache) if embedding_cache is not None \
            else cache_root() / "title-embeddings"
        scored = evaluate_seqrec(ctx, _load_items(data_dir), cache)
    doc.update(scored.doc)
    # an attempt resumed from chunks counts the time the earlier attempts spent on them
    earlier = sum(v for k, v in scored.seconds.items() if k.endswith(RESUMED))
    doc["seconds"] = {"load_model": round(t_load, 3), **scored.seconds,
                      "total": round(time.perf_counter() - t0 + earlier, 3)}
    doc = _write_outputs(part, doc, scored)
    shutil.rmtree(work, ignore_errors=True)
    place.commit()
    return doc


def _run_key(task: str, settings: EvalSettings, prompts: Sequence[str], negatives: str | None,
             identity: Mapping[str, Any], device: str) -> str:
    """The key of everything that shapes the model passes' results (the negatives too: the
    likelihood ranking scores them)."""
    doc = {"task": task, "settings": asdict(settings), "prompts": texts_digest(prompts),
           "model": identity["model_files"], "adapter": identity["adapter_files"],
           "device": device, "format": 1}
    if negatives is not None:
        doc["negatives"] = negatives
    return content_key(doc)


def _work_folder(part: Path, out: Path, run_key: str) -> Path:
    """The folder of the run's resumable chunks in the partial folder ``part``; chunks an
    interrupted run left inside ``out`` itself (an older layout) move there."""
    work = part / f".work-{run_key}"
    inside_out = out / f".work-{run_key}"
    if inside_out.is_dir() and not work.exists():
        os.rename(inside_out, work)
    return work


def _header(task: str, identity: Mapping[str, Any], data_dir: Path, n_records: int,
            prompts: Sequence[str], negatives: str | None, settings: EvalSettings,
            device: str) -> dict[str, Any]:
    """The entries of ``metrics.json`` before the task's own: the model, the data, the
    settings."""
    return {
        "task": task, "model": identity["model"], "model_files": identity["model_files"],
        "adapter": identity["adapter"], "adapter_files": identity["adapter_files"],
        "data": data_record(data_dir, n_records, prompts, negatives),
        "settings": {**asdict(settings), "device": device},
    }


def _write_outputs(part: Path, doc: Mapping[str, Any], scored: Scored) -> dict[str, Any]:
    """Write ``predictions.jsonl`` and then ``metrics.json`` into ``part`` (non-finite numbers
    as null); the metrics as written."""
    doc = _jsonable(doc)
    text = "".join(json.dumps(_jsonable(x), ensure_ascii=False) + "\n" for x in scored.lines)
    atomic_write_text(part / "predictions.jsonl", text)
    atomic_write_json(part / "metrics.json", doc)
    return doc
