#!/usr/bin/env python3
"""How far item popularity gets on a prepared SeqRec folder, and how a model relates to it.

The rule ranks candidates by how often each title occurs in the folder's ``train.json`` (in
the histories and as the target), most frequent first; ties count against the target, as in
``goracs evaluate``. For each ``predictions.jsonl`` given (from ``goracs evaluate --task
seqrec``) it prints, on exactly the samples that file scored: the model's NDCG@10 and HR@20
among the sampled candidates, the rule's, and the Pearson correlation between the two target
ranks. With no predictions file it scores the whole ``test.json`` (or the ``--max-test``
subset). ``--out DIR`` also writes the rule's ``metrics.json`` and ``predictions.jsonl``
(``rank_sampled``, ``rank_full``), which ``compare_predictions.py`` pairs with a model's.

    python scripts/seqrec_popularity_baseline.py DATA_DIR [PREDICTIONS.jsonl ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from goracs.errors import GoracsError
from goracs.evaluate.metrics import hit_ratio_at_k, ndcg_at_k, ranking_metrics
from goracs.evaluate.references import popularity_ranks, title_counts
from goracs.evaluate.run import sample_test_indices
from goracs.io import atomic_write_json, atomic_write_text, read_json, read_jsonl
from goracs.records import load_records


def _sampled_ranks(path: Path, test: Sequence[dict]) -> tuple[np.ndarray, list[int | None]]:
    rows = read_jsonl(path, "predictions")
    if not rows or not all({"index", "target", "rank_sampled"} <= set(r) for r in rows):
        raise GoracsError(f"{path}: not SeqRec predictions (each line needs index, target, "
                          "rank_sampled)")
    idx = np.array([int(r["index"]) for r in rows])
    if idx.min() < 0 or idx.max() >= len(test):
        raise GoracsError(f"{path}: indices outside test.json")
    if any(test[i]["target"] != r["target"] for i, r in zip(idx, rows, strict=True)):
        raise GoracsError(f"{path}: targets differ from test.json; predictions of another "
                          "data folder?")
    return idx, [r["rank_sampled"] for r in rows]


def _row(name: str, n: int, model: list[int | None] | None, rule: list[int | None]) -> str:
    def cells(ranks: list[int | None]) -> tuple[str, str]:
        return f"{ndcg_at_k(ranks, 10):.4f}", f"{hit_ratio_at_k(ranks, 20):.4f}"

    p_ndcg, p_hr = cells(rule)
    if model is None:
        return f"| {name} | {n} | | {p_ndcg} | | {p_hr} | |"
    m_ndcg, m_hr = cells(model)
    pairs = np.array([(a, b) for a, b in zip(model, rule, strict=True)
                      if a is not None and b is not None], dtype=np.float64).reshape(-1, 2)
    r = float(np.corrcoef(pairs.T)[0, 1]) if len(pairs) > 1 and pairs.std(axis=0).min() > 0 \
        else float("nan")
    return f"| {name} | {n} | {m_ndcg} | {p_ndcg} | {m_hr} | {p_hr} | {r:+.2f} |"


def report(data_dir: Path, prediction_files: list[Path], max_test: int | None = None,
           seed: int = 0, out: Path | None = None) -> str:
    test = load_records(data_dir / "test.json")
    counts = title_counts(load_records(data_dir / "train.json"))
    catalogue = read_json(data_dir / "items.json", "the SeqRec catalogue of item titles")
    if not isinstance(catalogue, list) or not all(isinstance(t, str) for t in catalogue):
        raise GoracsError(f"{data_dir / 'items.json'}: not a list of titles")
    sampled, full = popularity_ranks(test, counts, catalogue)
    lines = ["| scored by | samples | model NDCG@10 | popularity NDCG@10 | model HR@20 | "
             "popularity HR@20 | r(model rank, popularity rank) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    chosen = sample_test_indices(len(test), max_test, seed)
    if not prediction_files:
        name = "(whole test.json)" if len(chosen) == len(test) else f"(seeded {len(chosen)})"
        lines.append(_row(name, len(chosen), None, [sampled[i] for i in chosen]))
    for path in prediction_files:
        idx, model = _sampled_ranks(path, test)
        lines.append(_row(f"{path.parent.name}/{path.name}", len(idx), model,
                          [sampled[i] for i in idx]))
    if out is not None:
        preds = [{"index": int(i), "user": test[i].get("user"), "target": test[i]["target"],
                  "count": counts[test[i]["target"]], "rank_sampled": sampled[i],
                  "rank_full": full[i]} for i in chosen]
        metrics = {"task": "seqrec", "rule": "popularity in train.json",
                   "data": {"dir": str(data_dir), "test_records": len(test),
                            "scored": len(chosen)},
                   "settings": {"max_test": max_test, "seed": seed},
                   "metrics": {"sampled": ranking_metrics([sampled[i] for i in chosen]),
                               "full": ranking_metrics([full[i] for i in chosen])}}
        atomic_write_text(out / "predictions.jsonl",
                          "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in preds))
        atomic_write_json(out / "metrics.json", metrics)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir", type=Path, help="a prepared SeqRec folder (train.json, "
                    "test.json, items.json)")
    ap.add_argument("predictions", type=Path, nargs="*", help="predictions.jsonl files")
    ap.add_argument("--max-test", type=int, help="the seeded subset goracs evaluate scores")
    ap.add_argument("--seed", type=int, default=0, help="seed of the --max-test subset")
    ap.add_argument("--out", type=Path, help="write the rule's metrics.json and "
                    "predictions.jsonl here")
    args = ap.parse_args(argv)
    try:
        if args.max_test is not None and args.max_test < 1:
            raise GoracsError(f"--max-test must be at least 1, got {args.max_test}")
        print(report(args.data_dir, args.predictions, args.max_test, args.seed, args.out))
    except GoracsError as err:
        print(f"seqrec_popularity_baseline: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
