"""CLI commands of the features package: ``goracs features DIR``."""

from __future__ import annotations

import argparse
import sys

from goracs.checks import arg_int, arg_seed
from goracs.cluster import RAY_FORMS, check_ray, parse_ray
from goracs.errors import GoracsError
from goracs.models import PACKAGED_ENCODER, PACKAGED_LLM
from goracs.threads import add_threads_option, apply_threads


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "features",
        help="embeddings, gradient norms and importance scores of a prepared data folder",
        description="Embed the train and valid samples of DIR and measure the gradient norm, "
                    "EL2N and influence score of every training sample; writes "
                    "DIR/features/.",
    )
    p.add_argument("data_dir", metavar="DIR", help="prepared folder (train.json, valid.json, "
                   "meta.json)")
    p.add_argument("--task", choices=["seqrec", "ctr"],
                   help="override the task named in DIR/meta.json")
    g = p.add_argument_group("embeddings")
    g.add_argument("--encoder", default=PACKAGED_ENCODER,
                   help=f"sentence-transformers folder or hub id (default: the packaged "
                        f"{PACKAGED_ENCODER})")
    g.add_argument("--encoder-batch-size", type=arg_int(1), default=64, metavar="N")
    g.add_argument("--encoder-max-length", type=arg_int(1), default=None, metavar="N",
                   help="word pieces kept per text (default: the encoder's own limit)")
    g.add_argument("--encoder-dtype", choices=["fp32", "bf16"], default="fp32",
                   help="encoder precision (bf16: about twice as fast, distances within ~1%%)")
    g.add_argument("--embedding", choices=["encoder", "llm", "both"], default="encoder",
                   help="where train_emb.npy/valid_emb.npy come from: the sentence encoder "
                        "(default), or the scoring LLM (the mean of its last hidden state over "
                        "each prompt, taken in the gradient pass); 'both' keeps the encoder's "
                        "and writes the LLM's as llm_train_emb.npy/llm_valid_emb.npy "
                        "(`goracs select --embedding llm` reads them)")
    g = p.add_argument_group("gradient norms")
    g.add_argument("--model", default=PACKAGED_LLM,
                   help=f"causal LM folder or hub id (default: the packaged {PACKAGED_LLM}, "
                        "converted once into the cache)")
    g.add_argument("--adapter", default=None, metavar="DIR",
                   help="peft LoRA adapter folder: take the gradients at this (warm) adapter "
                        "instead of a freshly initialised LoRA")
    g.add_argument("--grad-loss", choices=["response", "text"], default=None,
                   help="tokens the loss of the gradient norms covers: the answer alone "
                        "(default for ctr, as CTR is fine-tuned) or the whole text (default "
                        "for seqrec)")
    g.add_argument("--lora-r", type=arg_int(1), default=8, metavar="R")
    g.add_argument("--lora-alpha", type=arg_int(1), default=16, metavar="A")
    g.add_argument("--lora-targets", default="q_proj,v_proj", metavar="NAMES",
                   help="comma-separated module names that get LoRA (default: q_proj,v_proj)")
    g.add_argument("--block", default=None, metavar="NAME",
                   help="parameter whose gradient is measured, a full name or unique dotted "
                        "suffix (default: LoRA B of v_proj in the last decoder layer)")
    g.add_argument("--batch-size", type=arg_int(1), default=8, metavar="N")
    g.add_argument("--max-length", type=arg_int(2), default=512, metavar="N",
                   help="tokens kept per sample (default: 512)")
    g.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                   help="model precision (bf16: about twice as fast here, norms within a few "
                        "%% of fp32)")
    g.add_argument("--seed", type=arg_seed(), default=0, help="seed of the LoRA initialisation")
    g.add_argument("--no-sort", action="store_true",
                   help="batch samples in file order instead of by length")
    g.add_argument("--no-share-prefix", action="store_true",
                   help="do not run the prefix all samples share once")
    g.add_argument("--no-scores", action="store_true",
                   help="skip EL2N and influence (el2n.npy, influence.npy), which come from "
                        "the same pass but keep each sample's block gradient on disk until "
                        "the pass ends (6 KB a sample for the default block)")
    p.add_argument("--device", default="cpu", metavar="DEV",
                   help="cpu (default), cuda[:N] or auto (a GPU when there is one); results "
                        "agree with the CPU's to float rounding and share its cache")
    add_threads_option(p)
    g = p.add_argument_group("scaling out")
    g.add_argument("--ray", default=None, metavar="ADDRESS", help="run the gradient pass "
                   "on Ray actors: " + RAY_FORMS + "; one model "
                   "per actor, each with --threads CPU threads (default 1) or, with --device "
                   "cuda, one GPU; the actors write the shards of the pass into DIR, so a "
                   "cluster's nodes must share its filesystem. Results and cache match a run "
                   "without --ray; the sentence encoder still runs here")
    g.add_argument("--ray-actors", type=arg_int(1), default=None, metavar="N",
                   help="actors to start with --ray (default: as many as the cluster's CPUs, "
                        "or GPUs, hold)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_features)


def cmd_features(args: argparse.Namespace) -> int:
    from goracs.features.pipeline import FeatureSettings, build_features
    from goracs.lm import pick_device

    targets = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
    for name, value in (("--encoder-batch-size", args.encoder_batch_size),
                        ("--batch-size", args.batch_size), ("--lora-r", args.lora_r),
                        ("--lora-alpha", args.lora_alpha)):
        if value < 1:
            raise GoracsError(f"{name} must be positive, got {value}")
    if args.encoder_max_length is not None and args.encoder_max_length < 1:
        raise GoracsError(f"--encoder-max-length must be positive, got {args.encoder_max_length}")
    if args.max_length < 2:
        raise GoracsError(f"--max-length must be at least 2, got {args.max_length}")
    if not targets:
        raise GoracsError("--lora-targets names no module")
    ray = None
    if args.ray is not None:
        from goracs.features.ray_pass import RayOptions

        ray = RayOptions(parse_ray(args.ray), threads=args.threads, actors=args.ray_actors)
        check_ray(ray.spec)
    elif args.ray_actors is not None:
        raise GoracsError("--ray-actors needs --ray")
    if ray is None or not args.device.startswith("cuda"):
        pick_device(args.device)  # an unknown or missing device fails before any work
    apply_threads(args.threads)
    settings = FeatureSettings(
        task=args.task, encoder=args.encoder, encoder_batch_size=args.encoder_batch_size,
        encoder_max_length=args.encoder_max_length, encoder_dtype=args.encoder_dtype,
        model=args.model, adapter=args.adapter,
        lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_targets=targets,
        block=args.block, batch_size=args.batch_size, max_length=args.max_length,
        dtype=args.dtype, seed=args.seed, sort_by_length=not args.no_sort,
        share_prefix=not args.no_share_prefix, device=args.device,
        scores=not args.no_scores, grad_loss=args.grad_loss, embedding=args.embedding,
    )
    if args.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # its weight-loading bars ignore our progress flag
    manifest = build_features(args.data_dir, settings, progress=not args.quiet,
                              log=lambda msg: print(msg, file=sys.stderr), ray=ray)
    secs = manifest["seconds"]
    # With --embedding llm there is no encoder entry: the embeddings are the LLM's.
    emb = manifest["encoder"] or manifest["llm_embedding"]
    print(f"task {manifest['task']}: {manifest['n_train']} train, {manifest['n_valid']} valid "
          f"samples; embeddings {emb['dim']}-d; features in "
          f"{args.data_dir.rstrip('/')}/features/ ({secs['total']:.1f} s)")
    return 0
