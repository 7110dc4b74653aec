"""CLI command of the training package: ``goracs finetune``."""

from __future__ import annotations

import argparse
import os
import sys

from goracs.checks import arg_float, arg_int, arg_seed
from goracs.outputs import OutputPlace
from goracs.records import load_records
from goracs.threads import add_threads_option, apply_threads
from goracs.train.settings import ENGINES, PRESETS, preset


def _modules(text: str) -> tuple[str, ...]:
    mods = tuple(m.strip() for m in text.split(",") if m.strip())
    if not mods:
        raise argparse.ArgumentTypeError("give module names separated by commas")
    return mods


def _local(spec: str | None) -> str | None:
    """``spec`` when it names an existing file or folder (a model given by path), else None."""
    return spec if spec is not None and os.path.exists(spec) else None


def _main_process() -> bool:
    """Whether this is the main process of the run (rank 0 of ``accelerate launch``)."""
    return os.environ.get("RANK", "0") == "0"


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a LoRA adapter on a coreset",
        description="LoRA fine-tuning of a causal LM on Alpaca records (a coreset). Writes a "
        "peft adapter folder with training.json (settings, losses, seconds). Checkpoints each "
        "epoch; rerun with the same --out to resume. With --engine trainer (the default) the "
        "same command runs under `accelerate launch` on several processes.",
    )
    p.add_argument("--data", required=True, help="training records (coreset JSON)")
    p.add_argument("--valid", help="validation records: best epoch and early stopping")
    p.add_argument("--out", required=True, help="adapter folder to create")
    p.add_argument("--model", default=None,
                   help="base model: smollm2-135m-instruct (default), a folder or a hub id")
    p.add_argument("--preset", default="cpu-small", choices=sorted(PRESETS),
                   help="starting settings; the flags below override them")
    p.add_argument("--lora-r", type=arg_int(1))
    p.add_argument("--lora-alpha", type=arg_int(1))
    p.add_argument("--lora-dropout", type=arg_float(minimum=0))
    p.add_argument("--target-modules", type=_modules, help="comma-separated, e.g. q_proj,v_proj")
    p.add_argument("--lr", type=arg_float(positive=True))
    p.add_argument("--epochs", type=arg_int(1))
    p.add_argument("--batch-size", type=arg_int(1), help="samples per optimizer step")
    p.add_argument("--micro-batch-size", type=arg_int(1), help="samples per forward pass")
    p.add_argument("--cutoff-len", type=arg_int(2), help="tokens kept per sample")
    p.add_argument("--warmup-steps", type=arg_int(0))
    p.add_argument("--weight-decay", type=arg_float(minimum=0))
    p.add_argument("--max-grad-norm", type=arg_float(positive=True))
    p.add_argument("--loss", choices=["response", "full"],
                   help="loss on the answer tokens only, or on the whole text")
    p.add_argument("--seed", type=arg_seed())
    p.add_argument("--early-stopping", type=arg_int(1), metavar="N",
                   help="stop after N epochs without a lower validation loss")
    p.add_argument("--max-valid", type=arg_int(1), help="validation samples scored per epoch")
    p.add_argument("--dtype", choices=["fp32", "bf16"])
    p.add_argument("--engine", choices=list(ENGINES), default="trainer",
                   help="training loop: transformers' Trainer (default; runs under "
                   "`accelerate launch`) or the plain single-device torch loop")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute activations in the backward pass (trainer engine)")
    p.add_argument("--warm-start", metavar="ADAPTER", help="peft adapter to continue from")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_threads_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_finetune)


def cmd_finetune(args: argparse.Namespace) -> int:
    from goracs.train.trainer import finetune

    settings = preset(args.preset).updated(
        lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
        target_modules=args.target_modules, lr=args.lr, epochs=args.epochs,
        batch_size=args.batch_size, micro_batch_size=args.micro_batch_size,
        cutoff_len=args.cutoff_len, warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm, loss=args.loss,
        seed=args.seed, early_stopping=args.early_stopping, max_valid=args.max_valid,
        dtype=args.dtype, engine=args.engine,
        gradient_checkpointing=args.gradient_checkpointing or None,
    ).validate()
    # the adapter folder before any work: a training run is never thrown away at the end
    OutputPlace(args.out, "finetune", inputs=[args.data, args.valid, args.warm_start,
                                              _local(args.model)]).check()
    apply_threads(args.threads)
    train = load_records(args.data)
    valid = load_records(args.valid) if args.valid else None
    manifest = finetune(train, args.out, settings, model=args.model, valid_records=valid,
                        warm_start=args.warm_start, device=args.device,
                        progress=not args.quiet,
                        sources={"train": args.data, "valid": args.valid,
                                 "preset": args.preset})
    if not _main_process():
        return 0
    last = manifest["history"][-1] if manifest["history"] else {}
    print(f"wrote {args.out}: {manifest['data']['train_samples']} samples, "
          f"{len(manifest['history'])} epochs, best epoch {manifest['best_epoch']}, "
          f"last train loss {last.get('train_loss')}, valid loss {last.get('valid_loss')}, "
          f"{manifest['seconds']['train']:.1f} s", file=sys.stdout)
    return 0
