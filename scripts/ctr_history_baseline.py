#!/usr/bin/env python3
"""How far a model-free rule gets on a prepared CTR folder, and how a model relates to it.

The rule scores each test sample by the share of its history the user liked (the two quoted
lists of the TALLRec-style prompt). For each ``predictions.jsonl`` given (from
``goracs evaluate --task ctr``) it prints, on exactly the samples that file scored: the
model's AUC, the rule's AUC, and the Pearson correlation between the model's P(Yes) and the
rule. With no predictions file it scores the whole ``test.json``.

    python scripts/ctr_history_baseline.py DATA_DIR [PREDICTIONS.jsonl ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from goracs.errors import GoracsError
from goracs.evaluate.metrics import auc
from goracs.io import read_jsonl
from goracs.prompts import liked_share
from goracs.records import ctr_labels, load_records


def _predictions(path: Path) -> list[dict]:
    rows = read_jsonl(path, "predictions")
    if not rows or not all({"index", "label", "p_yes"} <= set(r) for r in rows):
        raise GoracsError(f"{path}: not CTR predictions (each line needs index, label, p_yes)")
    return rows


def report(data_dir: Path, prediction_files: list[Path]) -> str:
    test = load_records(data_dir / "test.json")
    share = np.array([liked_share(r) for r in test])
    labels = ctr_labels(test, str(data_dir / "test.json"))
    lines = ["| scored by | samples | model AUC | liked-share AUC | r(P(Yes), liked share) |",
             "|---|---:|---:|---:|---:|"]
    if not prediction_files:
        lines.append(f"| (whole test.json) | {len(test)} | | {auc(labels, share):.4f} | |")
    for path in prediction_files:
        rows = _predictions(path)
        idx = np.array([int(r["index"]) for r in rows])
        if idx.min() < 0 or idx.max() >= len(test):
            raise GoracsError(f"{path}: indices outside {data_dir / 'test.json'}")
        y = np.array([int(r["label"]) for r in rows])
        if not np.array_equal(y, labels[idx]):
            raise GoracsError(f"{path}: labels differ from {data_dir / 'test.json'}; "
                              "predictions of another data folder?")
        p = np.array([float(r["p_yes"]) for r in rows])
        r_corr = float(np.corrcoef(p, share[idx])[0, 1]) if p.std() > 0 else float("nan")
        lines.append(f"| {path.parent.name}/{path.name} | {len(rows)} | {auc(y, p):.4f} | "
                     f"{auc(y, share[idx]):.4f} | {r_corr:+.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir", type=Path, help="a prepared CTR folder (holds test.json)")
    ap.add_argument("predictions", type=Path, nargs="*", help="predictions.jsonl files")
    args = ap.parse_args(argv)
    try:
        print(report(args.data_dir, args.predictions))
    except GoracsError as err:
        print(f"ctr_history_baseline: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
