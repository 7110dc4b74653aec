#!/usr/bin/env python3
"""Paired comparison of evaluations that scored the same test samples.

The first ``predictions.jsonl`` (from ``goracs evaluate``) is the reference A; every further
one is compared with it on the samples both scored (matched by ``index``; the sets must be
equal). SeqRec: NDCG@K and HR@K of each run under the sampled and full protocols, the paired
difference (B - A), its standard error and z, and the samples B wins and loses. CTR: AUC of
each, the difference and a paired bootstrap (seeded) standard error and 95% interval.

    python scripts/compare_predictions.py A/predictions.jsonl B/predictions.jsonl [...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from goracs.errors import GoracsError
from goracs.evaluate.compare import paired_auc_difference, paired_ranking_difference
from goracs.evaluate.compare_commands import check_same_test, load_run


def _load(path: Path) -> tuple[str, dict[int, dict], dict]:
    """The run's task, its rows by test index, and what its metrics.json says of the test."""
    task, rows, ident = load_run(str(path))
    by_index = {int(r["index"]): r for r in rows}
    if len(by_index) != len(rows):
        raise GoracsError(f"{path}: repeated index")
    return task, by_index, ident


def _name(path: Path) -> str:
    return path.parent.name or str(path)


def report(paths: list[Path], ks: list[int], n_boot: int = 1000, seed: int = 0) -> str:
    if len(paths) < 2:
        raise GoracsError("give at least two predictions files: the reference, then the others")
    task, ref, ref_ident = _load(paths[0])
    order = sorted(ref)
    lines: list[str] = []
    if task == "seqrec":
        lines += ["| A | B | metric | A | B | B - A | se | z | B wins / loses |",
                  "|---|---|---|---:|---:|---:|---:|---:|---|"]
    else:
        lines += ["| A | B | samples | AUC A | AUC B | B - A | bootstrap se | 95% interval |",
                  "|---|---|---:|---:|---:|---:|---:|---|"]
    for path in paths[1:]:
        t, other, ident = _load(path)
        if t != task:
            raise GoracsError(f"{path}: {t} predictions, but {paths[0]} holds {task}")
        check_same_test([str(paths[0]), str(path)], [ref_ident, ident])
        if set(other) != set(ref):
            raise GoracsError(f"{path}: scored other samples than {paths[0]} "
                              f"({len(other)} against {len(ref)})")
        a_name, b_name = _name(paths[0]), _name(path)
        if task == "ctr":
            labels = [int(ref[i]["label"]) for i in order]
            if labels != [int(other[i]["label"]) for i in order]:
                raise GoracsError(f"{path}: labels differ from {paths[0]}")
            r = paired_auc_difference(labels, [float(ref[i]["p_yes"]) for i in order],
                                      [float(other[i]["p_yes"]) for i in order],
                                      n_boot=n_boot, seed=seed)
            lines.append(f"| {a_name} | {b_name} | {len(order)} | {r['a']:.4f} | {r['b']:.4f} "
                         f"| {r['diff']:+.4f} | {r['se']:.4f} | "
                         f"[{r['low']:+.4f}, {r['high']:+.4f}] |")
            continue
        if [ref[i]["target"] for i in order] != [other[i]["target"] for i in order]:
            raise GoracsError(f"{path}: targets differ from {paths[0]}")
        for proto in ("sampled", "full"):
            key = f"rank_{proto}"
            ra = [ref[i].get(key) for i in order]
            rb = [other[i].get(key) for i in order]
            if all(r is None for r in ra + rb):
                continue  # a protocol neither run scored (likelihood ranking has no full one)
            for metric in ("NDCG", "HR"):
                for k in ks:
                    r = paired_ranking_difference(ra, rb, k, metric)
                    lines.append(f"| {a_name} | {b_name} | {proto}.{metric}@{k} | {r['a']:.4f} "
                                 f"| {r['b']:.4f} | {r['diff']:+.4f} | {r['se']:.4f} | "
                                 f"{r['z']:+.2f} | {r['wins']} / {r['losses']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("predictions", type=Path, nargs="+",
                    help="predictions.jsonl files; the first is the reference")
    ap.add_argument("--k", type=int, nargs="+", default=[10, 20], help="cut-offs (SeqRec)")
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (CTR)")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed (CTR)")
    args = ap.parse_args(argv)
    try:
        if any(k < 1 for k in args.k) or args.n_boot < 1:
            raise GoracsError("--k and --n-boot must be at least 1")
        print(report(args.predictions, args.k, args.n_boot, args.seed))
    except GoracsError as err:
        print(f"compare_predictions: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
