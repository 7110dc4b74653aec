"""Scaling out the gradient pass: one process with 2 threads against 2 Ray actors of 1 thread.

    python benchmarks/features_scale.py                  # 512 ML-1M CTR samples
    python benchmarks/features_scale.py --samples 64 --json   # last line is one JSON object

The samples are prepared from the packaged MovieLens-1M as ``goracs prepare --dataset ml-1m
--task ctr --max-train N`` makes them, into a temporary folder. Their gradient norms (CTR's
response loss, the packaged SmolLM2-135M-Instruct with a fresh LoRA, the default block, batch
size 8) are computed twice, each into its own empty cache:

* single: :class:`goracs.features.GradNormScorer` in this process, torch on 2 threads;
* ray: the same scorer's pass with its shards on a local Ray of 2 CPUs, 2 actors of 1 thread
  (:mod:`goracs.features.ray_pass`), as ``goracs features --ray local:2 --threads 1`` runs it.

The wall time of each is the pass alone for ``single`` (the model is loaded before) and, for
``ray``, everything the pass adds: starting the local Ray, starting the actors, each loading
its own model and running the shared prefix, and the shards. The largest absolute and
relative differences of the two sets of norms are reported too.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np


def prepare(folder: Path, samples: int) -> Path:
    """``goracs prepare --dataset ml-1m --task ctr --max-train samples`` into ``folder``."""
    from goracs.cli import main

    out = folder / "ml-1m-ctr"
    code = main(["prepare", "--dataset", "ml-1m", "--task", "ctr", "--out", str(out),
                 "--max-train", str(samples), "--valid-size", "16", "--test-size", "16"])
    if code != 0:
        sys.exit(f"features_scale: goracs prepare failed (exit {code})")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=512, help="training samples (default 512)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--shard-batches", type=int, default=8,
                    help="batches per shard (default 8, as goracs features has it; a small "
                         "--samples needs fewer for both actors to get a shard)")
    ap.add_argument("--json", action="store_true", help="print one JSON object last")
    args = ap.parse_args()

    import torch

    from goracs.cluster import parse_ray
    from goracs.features import GradNormScorer, LoraSettings, load_scoring_model
    from goracs.features.ray_pass import RayOptions, describe, ray_runner
    from goracs.records import load_records, render_prompt, training_texts

    with tempfile.TemporaryDirectory(prefix="goracs-scale-") as tmp:
        root = Path(tmp)
        data = prepare(root, args.samples)
        train = load_records(data / "train.json")
        torch.set_num_threads(2)
        lora = LoraSettings()
        model, tok, identity = load_scoring_model(None, lora=lora)
        scorer_args = {"batch_size": args.batch_size, "loss": "response",
                       "shard_batches": args.shard_batches}
        scorer = GradNormScorer(model, tok, identity=identity, **scorer_args)
        ids = scorer.tokenize(training_texts(train))
        starts = scorer.response_starts([render_prompt(r, False) for r in train], ids)

        t0 = time.perf_counter()
        single = scorer.scores_from_ids(ids, starts, cache_dir=root / "c1", progress=False,
                                        scores=False).grad_norms
        single_s = time.perf_counter() - t0

        options = RayOptions(parse_ray("local:2"), threads=1, actors=2)
        load = {"model": None, "adapter": None, "dtype": "fp32", "device": "cpu",
                "lora": {**asdict(lora), "targets": list(lora.targets)}}
        runner = ray_runner(options, load, scorer_args, lambda seqs: describe(scorer, seqs))
        t0 = time.perf_counter()
        spread = scorer.scores_from_ids(ids, starts, cache_dir=root / "c2", progress=False,
                                        scores=False, runner=runner).grad_norms
        ray_s = time.perf_counter() - t0

    diff = np.abs(single.astype(np.float64) - spread.astype(np.float64))
    result = {
        "samples": len(ids), "batch_size": args.batch_size,
        "shards": int(-(-len(ids) // (args.batch_size * scorer.shard_batches))),
        "single_2_threads_s": round(single_s, 2),
        "ray_2_actors_1_thread_s": round(ray_s, 2),
        "max_abs_diff": float(diff.max()),
        "max_rel_diff": float((diff / np.abs(single.astype(np.float64))).max()),
        "identical": bool(np.array_equal(single, spread)),
        "ray": options.used,
    }
    print(f"{result['samples']} samples: one process, 2 threads {single_s:.1f} s; "
          f"2 Ray actors, 1 thread each {ray_s:.1f} s (Ray and actor start-up included); "
          f"largest difference {result['max_abs_diff']:.3g} "
          f"(relative {result['max_rel_diff']:.3g})")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
