"""``goracs evaluate --rule``: a model-free reference scored like a model.

The rule of :mod:`goracs.evaluate.references` (the liked-share rule for CTR, popularity for
SeqRec) on the same test records a model evaluation with the same ``--max-test`` and
``--seed`` scores, written as ``metrics.json`` and ``predictions.jsonl`` in the evaluation's
format, so ``goracs compare`` puts a fine-tuned model beside what counting alone knows.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from goracs.errors import GoracsError
from goracs.evaluate.metrics import ctr_metrics, ranking_metrics
from goracs.evaluate.references import liked_share_predictions, popularity_predictions
from goracs.evaluate.run import data_record, negatives_digest, sample_test_indices
from goracs.io import atomic_write_json, atomic_write_text, read_json
from goracs.outputs import OutputPlace
from goracs.records import load_records, render_prompt

#: Each task's rule, by the name ``--rule`` takes.
RULES = {"liked-share": "ctr", "popularity": "seqrec"}


def rule_metrics(task: str, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The metrics of a rule's prediction rows, as ``metrics.json`` holds a model's."""
    if task == "ctr":
        return ctr_metrics([r["label"] for r in rows], [r["p_yes"] for r in rows])
    return {p: ranking_metrics([r[f"rank_{p}"] for r in rows]) for p in ("sampled", "full")}


def rule_predictions(data_dir: Path, task: str, test: Sequence[dict[str, Any]],
                     indices: Sequence[int]) -> list[dict[str, Any]]:
    """The task's rule on the folder's test records ``test`` at ``indices``."""
    if task == "ctr":
        return liked_share_predictions(test, indices)
    catalogue = read_json(data_dir / "items.json", "the SeqRec catalogue")
    if not isinstance(catalogue, list) or not all(isinstance(t, str) for t in catalogue):
        raise GoracsError(f"{data_dir / 'items.json'}: expected a list of item titles")
    return popularity_predictions(load_records(data_dir / "train.json"), test, catalogue,
                                  indices)


def evaluate_rule(data_dir: str | os.PathLike, task: str, out: str | os.PathLike, rule: str,
                  max_test: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Score ``rule`` on the test records of ``data_dir`` that ``goracs evaluate`` with the
    same ``max_test`` and ``seed`` scores; writes ``metrics.json`` and ``predictions.jsonl``
    into ``out`` (all or nothing) and returns the metrics document."""
    if rule not in RULES:
        raise GoracsError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    if RULES[rule] != task:
        raise GoracsError(f"the {rule} rule scores {RULES[rule]} records; this folder's task "
                          f"is {task}")
    data_dir = Path(data_dir)
    place = OutputPlace(out, "evaluate", inputs=[data_dir]).check()
    t0 = time.perf_counter()
    test = load_records(data_dir / "test.json")
    idx = [int(i) for i in sample_test_indices(len(test), max_test, seed)]
    rows = rule_predictions(data_dir, task, test, idx)
    scored = [test[i] for i in idx]
    # the record a model's evaluation of the same records writes (one row per record)
    data = data_record(data_dir, len(test), [render_prompt(r, False) for r in scored],
                       negatives_digest(scored) if task == "seqrec" else None)
    doc = {"task": task, "rule": rule, "model": None, "adapter": None, "data": data,
           "settings": {"max_test": max_test, "seed": seed},
           "metrics": rule_metrics(task, rows),
           "seconds": {"total": round(time.perf_counter() - t0, 3)}}
    part = place.begin()
    atomic_write_text(part / "predictions.jsonl",
                      "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    atomic_write_json(part / "metrics.json", doc)
    place.commit()
    return doc
