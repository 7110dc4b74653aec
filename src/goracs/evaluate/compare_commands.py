"""CLI command ``goracs compare``: is one set of fine-tuned runs better than another?

Each arm is one or more evaluations (``goracs evaluate`` folders, or their
``predictions.jsonl``) of the same test samples, typically one per fine-tuning seed: the
baseline (say random coresets) and the candidate (say GORACS coresets). Every metric is
compared as the experiment tables compare a method with random
(:mod:`goracs.evaluate.verdict`): the difference in mean metric over each arm's runs, with a
95% interval from a bootstrap over test users, seeds pooled, and a second interval that also
redraws the seeds; then one sentence per metric.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from goracs.checks import arg_float, arg_int, arg_seed
from goracs.errors import GoracsError

PREDICTIONS = "predictions.jsonl"
CTR_METRICS = ("AUC", "log_loss", "accuracy")
SEQREC_METRICS = ("NDCG@10", "HR@10", "NDCG@20")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="paired comparison of two sets of evaluations on the same test users",
        description="Compare the candidate runs with the baseline runs (each an evaluation "
        "folder from goracs evaluate, or its predictions.jsonl; one per seed) on the test "
        "samples they all scored: per metric, the difference in mean metric (candidate - "
        "baseline) with a bootstrap interval over test users (seeds pooled) and one that "
        "also redraws the seeds, and a sentence saying which wins.",
    )
    p.add_argument("--baseline", nargs="+", required=True, metavar="RUN",
                   help="the baseline's evaluations (e.g. one per random-coreset seed)")
    p.add_argument("--candidate", nargs="+", required=True, metavar="RUN",
                   help="the candidate's evaluations (e.g. one per GORACS seed)")
    p.add_argument("--baseline-name", default="baseline", help="its name in the sentences")
    p.add_argument("--candidate-name", default="candidate", help="its name in the sentences")
    p.add_argument("--metric", action="append", metavar="NAME",
                   help="a metric to compare (repeat for several). CTR: AUC, log_loss, "
                   "accuracy (default: all three). SeqRec: PROTO.NDCG@K or PROTO.HR@K with "
                   "PROTO sampled or full (default: NDCG@10, HR@10 and NDCG@20 of each "
                   "protocol the runs have)")
    p.add_argument("--replicates", type=arg_int(100), default=2000,
                   help="bootstrap replicates (default 2000)")
    p.add_argument("--level", type=arg_float(positive=True), default=0.95,
                   help="interval coverage (default 0.95)")
    p.add_argument("--seed", type=arg_seed(), default=0, help="seed of the bootstrap")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object instead of the table and sentences")
    p.set_defaults(func=cmd_compare)


#: What ``metrics.json`` records of the test samples scored; runs compared must agree on each
#: one that they record.
TEST_IDENTITY = {"test_digest": "test prompts", "negatives_digest": "SeqRec negatives"}


def load_run(spec: str) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """A run's task, prediction rows, and what its ``metrics.json`` (when beside the
    predictions) records of the test samples (:data:`TEST_IDENTITY`), from an evaluation
    folder or a predictions file."""
    from goracs.io import read_json, read_jsonl

    path = Path(spec)
    if path.is_dir():
        path = path / PREDICTIONS
    if not path.is_file():
        raise GoracsError(f"{spec}: no {PREDICTIONS} (give an evaluation folder or the file)")
    rows = read_jsonl(path, "predictions")
    if not rows or not all(isinstance(r, dict) and "index" in r for r in rows):
        raise GoracsError(f"{path}: not predictions (each line needs an index)")
    metrics = path.parent / "metrics.json"
    doc = read_json(metrics) if metrics.is_file() else None
    data = doc.get("data") if isinstance(doc, dict) else None
    ident = {k: data[k] for k in TEST_IDENTITY if isinstance(data, dict) and k in data}
    if all("p_yes" in r and "label" in r for r in rows):
        return "ctr", rows, ident
    if all("rank_sampled" in r for r in rows):
        return "seqrec", rows, ident
    raise GoracsError(f"{path}: lines need p_yes and label (CTR) or rank_sampled (SeqRec)")


def check_same_test(specs: list[str], idents: list[dict[str, Any]]) -> None:
    """Refuse runs whose ``metrics.json`` record different test prompts or negatives: the
    prediction rows carry only indices, which two different test folders share."""
    for key, what in TEST_IDENTITY.items():
        seen = {(str(i[key]), s) for s, i in zip(specs, idents, strict=True) if key in i}
        if len({v for v, _ in seen}) > 1:
            a, b = sorted(seen)[0][1], sorted(seen)[-1][1]
            raise GoracsError(f"the runs compared scored different {what} ({a} and {b}); "
                              "compare evaluations of the same prepared test set")


def default_metrics(task: str, runs: list[list[dict[str, Any]]]) -> list[str]:
    """The metrics compared when none is named: every protocol all runs have."""
    if task == "ctr":
        return list(CTR_METRICS)
    protos = ["sampled"]
    if all(any(r.get("rank_full") is not None for r in rows) for rows in runs):
        protos.append("full")
    return [f"{p}.{m}" for p in protos for m in SEQREC_METRICS]


def compare_arms(baseline: list[str], candidate: list[str], metrics: list[str] | None = None,
                 replicates: int = 2000, level: float = 0.95, seed: int = 0
                 ) -> tuple[str, dict[str, Any]]:
    """The task and, per metric, the :class:`~goracs.evaluate.verdict.Comparison` of the
    candidate runs with the baseline runs (paths as ``goracs compare`` takes them)."""
    from goracs.evaluate.bootstrap import metric_kind
    from goracs.evaluate.verdict import compare

    if not 0 < level < 1:
        raise GoracsError(f"--level must be between 0 and 1, got {level}")
    loaded = [[load_run(s) for s in arm] for arm in (baseline, candidate)]
    tasks = {t for arm in loaded for t, _, _ in arm}
    if len(tasks) > 1:
        raise GoracsError("the runs compared mix CTR and SeqRec predictions")
    task = tasks.pop()
    check_same_test(baseline + candidate, [i for arm in loaded for _, _, i in arm])
    a_runs = [rows for _, rows, _ in loaded[0]]
    b_runs = [rows for _, rows, _ in loaded[1]]
    names = metrics or default_metrics(task, a_runs + b_runs)
    for m in names:
        metric_kind(task, m)  # an unknown metric: one line before any work
    return task, {m: compare(task, m, a_runs, b_runs, replicates=replicates, level=level,
                             seed=seed) for m in names}


def cmd_compare(args: argparse.Namespace) -> int:
    from goracs.evaluate.verdict import format_difference, verdict_sentence

    task, comps = compare_arms(args.baseline, args.candidate, args.metric, args.replicates,
                               args.level, args.seed)
    base, cand = args.baseline_name, args.candidate_name
    first = next(iter(comps.values())).users
    if args.json:
        doc = {"task": task, "baseline": {"name": base, "runs": args.baseline},
               "candidate": {"name": cand, "runs": args.candidate},
               "users": first.users, "samples": first.samples, "level": args.level,
               "replicates": args.replicates, "seed": args.seed,
               "metrics": {m: {"baseline": c.users.a, "candidate": c.users.b,
                               "difference": c.users.diff,
                               "interval": [c.users.lo, c.users.hi],
                               "interval_seeds_redrawn": [c.seeds.lo, c.seeds.hi],
                               "verdict": c.verdict(m),
                               "sentence": verdict_sentence(cand, base, m, c)}
                           for m, c in comps.items()}}
        print(json.dumps(doc, indent=1))
        return 0
    pct = f"{args.level:.0%}"

    def runs(k: int) -> str:
        return f"{k} run{'s' if k != 1 else ''}"

    print(f"{cand} ({runs(first.runs_b)}) against {base} ({runs(first.runs_a)}), {task}: "
          f"{first.samples:,} test samples from {first.users:,} users; {pct} intervals from "
          f"{args.replicates:,} bootstrap replicates over users")
    width = max(len("metric"), *(len(m) for m in comps))
    print(f"{'metric':<{width}}  {base[:12]:>12}  {cand[:12]:>12}  {'difference [users]':<27}  "
          "seeds redrawn")
    for m, c in comps.items():
        print(f"{m:<{width}}  {c.users.a:>12.4f}  {c.users.b:>12.4f}  "
              f"{format_difference(c.users):<27}  [{c.seeds.lo:+.4f}, {c.seeds.hi:+.4f}]")
    for m, c in comps.items():
        print(verdict_sentence(cand, base, m, c))
    return 0
