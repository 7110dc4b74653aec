"""CLI command of the evaluation package: ``goracs evaluate``."""

from __future__ import annotations

import argparse
import os

from goracs.checks import arg_int, arg_seed
from goracs.errors import GoracsError
from goracs.outputs import OutputPlace
from goracs.records import check_task, read_task
from goracs.threads import add_threads_option, apply_threads


def _local(spec: str | None) -> str | None:
    """``spec`` when it names an existing file or folder (a model given by path), else None."""
    return spec if spec is not None and os.path.exists(spec) else None


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a model (and adapter) on the test split: SeqRec NDCG/HR or CTR AUC",
        description="SeqRec: generate, ground the answer to item titles by L2 distance of "
        "last-token hidden states, NDCG@K and HR@K (K=1,5,10,20) among the target's sampled "
        "negatives and over the full catalogue. CTR: P(Yes) from the Yes/No logits, AUC, "
        "log-loss, accuracy. Writes OUT/metrics.json and OUT/predictions.jsonl.",
    )
    p.add_argument("--data", required=True, help="prepared data folder (test.json, items.json)")
    p.add_argument("--task", choices=["seqrec", "ctr"],
                   help="default: the task named in DATA/meta.json")
    p.add_argument("--model", default=None,
                   help="base model: smollm2-135m-instruct (default), a folder or a hub id")
    p.add_argument("--adapter", help="peft adapter folder (from goracs finetune)")
    p.add_argument("--rule", choices=["liked-share", "popularity"],
                   help="score a model-free reference instead of a model, on the records a "
                   "model evaluation with the same --max-test and --seed scores: CTR "
                   "liked-share (P(Yes) from the share of the history the user liked), "
                   "SeqRec popularity (candidates by their count in the training pool)")
    p.add_argument("--max-test", type=arg_int(1),
                   help="score a seeded random subset of N test records")
    p.add_argument("--seed", type=arg_seed(), default=0, help="seed of the --max-test subset")
    p.add_argument("--batch-size", type=arg_int(1), default=8,
                   help="prompts per forward/generate call")
    p.add_argument("--max-new-tokens", type=arg_int(1), default=32, help="SeqRec generation length")
    p.add_argument("--num-beams", type=arg_int(1), default=1, help="SeqRec: 1 is greedy decoding")
    p.add_argument("--decoding", choices=["free", "catalogue"], default="free",
                   help="SeqRec: free generation grounded by L2 (BIGRec), or generation that "
                   "may only spell catalogue titles")
    p.add_argument("--ranking", choices=["grounding", "likelihood"], default="grounding",
                   help="SeqRec: generate and ground (BIGRec), or rank the sampled candidates "
                   "by the model's log-probability of each answer (no generation; no "
                   "full-catalogue protocol)")
    p.add_argument("--embed-batch-size", type=arg_int(1), default=32,
                   help="titles per forward pass")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-shared-prefix", action="store_true",
                   help="CTR, and likelihood ranking in fp32: score every prompt whole "
                   "instead of running the prompt tokens all records share once (same scores "
                   "up to float rounding, slower)")
    add_threads_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.rule is not None:
        return _evaluate_rule(args)
    from goracs.evaluate.run import EvalSettings, evaluate

    # the output folder before any work: an evaluation is never thrown away at the end
    OutputPlace(args.out, "evaluate", inputs=[args.data, args.adapter, _local(args.model)]
                ).check()
    task = check_task(args.task, "--task") if args.task else read_task(args.data)
    settings = EvalSettings(max_test=args.max_test, seed=args.seed, batch_size=args.batch_size,
                            max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
                            embed_batch_size=args.embed_batch_size, dtype=args.dtype,
                            decoding=args.decoding, ranking=args.ranking).validate()
    apply_threads(args.threads)
    doc = evaluate(args.data, task, args.out, settings, model=args.model, adapter=args.adapter,
                   device=args.device, progress=not args.quiet,
                   share_prefix=not args.no_shared_prefix)
    print(f"wrote {args.out}/metrics.json ({doc['data']['scored']} test samples, "
          f"{doc['seconds']['total']:.1f} s): {_summary(task, doc['metrics'])}")
    return 0


def _evaluate_rule(args: argparse.Namespace) -> int:
    from goracs.evaluate.rule_run import evaluate_rule

    for flag in ("model", "adapter"):
        if getattr(args, flag) is not None:
            raise GoracsError(f"--rule scores no model; drop --{flag}")
    task = check_task(args.task, "--task") if args.task else read_task(args.data)
    doc = evaluate_rule(args.data, task, args.out, args.rule, args.max_test, args.seed)
    print(f"wrote {args.out}/metrics.json ({doc['data']['scored']} test samples, "
          f"{args.rule} rule): {_summary(task, doc['metrics'])}")
    return 0


def _summary(task: str, m: dict) -> str:
    """The headline metrics of a metrics.json's ``metrics``."""
    if task == "ctr":
        return (f"AUC {m['AUC']:.4f}, log-loss {m['log_loss']:.4f}, "
                f"accuracy {m['accuracy']:.4f}")
    return "; ".join(f"{proto}: NDCG@10 {m[proto]['NDCG@10']:.4f}, "
                     f"HR@10 {m[proto]['HR@10']:.4f}"
                     for proto in ("sampled", "full") if m.get(proto))
