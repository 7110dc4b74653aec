"""Speed of CTR scoring (``goracs evaluate --task ctr``) with the shared prompt prefix run once,
beside plain scoring, on the same real MovieLens-1M CTR test records.

    python benchmarks/ctr_speed.py                          # 64 records, fp32 (~3 min)
    python benchmarks/ctr_speed.py --n 16 --json            # quicker; last line is one JSON object
    python benchmarks/ctr_speed.py --dtype bf16 --threads 2

Each record's P(Yes) = softmax over the Yes/No logits after its prompt, under the packaged
SmolLM2-135M-Instruct, two ways, in the batches ``goracs evaluate`` forms (prompts sorted by
length, ``--batch-size`` a batch, right-padded):

* plain (before): :func:`goracs.evaluate.ctr.p_yes_batch` on whole prompts;
* prefix (after, what ``goracs evaluate`` runs): the prompt tokens every record shares (the
  Alpaca preamble, the instruction and the start of the input) run once for all records
  (:func:`goracs.evaluate.ctr.reusable_prefix`, which also checks a few records both ways),
  and each batch continues from their key/value cache.

The two ways run batch by batch in turn, each going first every other batch, so that load
from other jobs falls on both alike; the figures are medians of per-batch samples per second.
The one-off prefix pass with its check is timed apart and counted in the overall rate. The
largest difference between the two ways' P(Yes) is printed too (rounding: ~1e-6 in fp32,
hundredths in bf16).

The records are the last ``--test-size`` windows in time of ML-1M (the ``goracs prepare
--dataset ml-1m --task ctr`` split, seed 0), ``--n`` of them drawn with seed 0, as
``goracs evaluate --max-test N --seed 0`` draws them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=64, help="test records scored (default 64)")
    ap.add_argument("--test-size", type=int, default=1000,
                    help="size of the test split they are drawn from (default 1000)")
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--batch-size", type=int, default=8,
                    help="prompts per forward pass, as goracs evaluate (default 8)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    ap.add_argument("--json", action="store_true", help="print one JSON object last")
    args = ap.parse_args(argv)
    if args.n < 1 or args.batch_size < 1 or args.test_size < args.n:
        ap.error("need --n >= 1, --batch-size >= 1 and --test-size >= --n")

    import torch

    from goracs.data.prepare import build_prepared, default_domain, load_interactions
    from goracs.evaluate.ctr import answer_token_ids, p_yes_batch, reusable_prefix
    from goracs.evaluate.run import sample_test_indices
    from goracs.lm import load_lm
    from goracs.records import render_prompt

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    prepared = build_prepared(load_interactions("ml-1m"), "ctr", default_domain("ml-1m"),
                              dataset="ml-1m", valid_size=200, test_size=args.test_size,
                              max_train=1000, seed=0)
    test = prepared.splits["test"]
    records = [test[i] for i in sample_test_indices(len(test), args.n, 0)]
    prompts = [render_prompt(r, False) for r in records]
    model, tok, _ = load_lm(None, None, dtype=args.dtype, device="cpu")
    model.eval()
    yes_id, no_id = answer_token_ids(tok, records[0])
    tokens = [len(e) for e in tok(prompts, add_special_tokens=True)["input_ids"]]

    t = time.perf_counter()
    prefix = reusable_prefix(model, tok, prompts, yes_id, no_id, "cpu")
    setup_s = time.perf_counter() - t
    if prefix is None:
        print("the shared prefix cannot be reused with this model; prefix is plain",
              file=sys.stderr)

    # The batches goracs evaluate forms: prompts sorted by length, in file order on ties.
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    batches = [order[a:a + args.batch_size] for a in range(0, len(order), args.batch_size)]
    plain = np.empty(len(prompts))
    shared = np.empty(len(prompts))
    rate = {"plain": [], "prefix": []}
    spent = {"plain": 0.0, "prefix": 0.0}
    for k, batch in enumerate(batches):
        texts = [prompts[i] for i in batch]
        ways: list[tuple[str, Any, np.ndarray]] = [("plain", None, plain),
                                                   ("prefix", prefix, shared)]
        for name, pre, out in (ways if k % 2 == 0 else ways[::-1]):
            t = time.perf_counter()
            out[batch] = p_yes_batch(model, tok, texts, yes_id, no_id, "cpu", pre)
            s = time.perf_counter() - t
            rate[name].append(len(batch) / s)
            spent[name] += s
        print(f"batch {k + 1}/{len(batches)}: plain {rate['plain'][-1]:.2f}, prefix "
              f"{rate['prefix'][-1]:.2f} samples/s", file=sys.stderr)

    worst = float(np.max(np.abs(plain - shared)))
    med_b, med_a = statistics.median(rate["plain"]), statistics.median(rate["prefix"])
    overall_b = len(prompts) / spent["plain"]
    overall_a = len(prompts) / (spent["prefix"] + setup_s)
    result = {"records": len(prompts), "dtype": args.dtype, "threads": torch.get_num_threads(),
              "batch_size": args.batch_size, "median_prompt_tokens": statistics.median(tokens),
              "prefix_tokens": 0 if prefix is None else len(prefix),
              "prefix_setup_s": round(setup_s, 3),
              "median_samples_per_s_plain": round(med_b, 3),
              "median_samples_per_s_prefix": round(med_a, 3),
              "speedup": round(med_a / med_b, 2),
              "overall_samples_per_s_plain": round(overall_b, 3),
              "overall_samples_per_s_prefix_with_setup": round(overall_a, 3),
              "max_abs_diff_p_yes": float(f"{worst:.3g}")}
    print(f"{len(prompts)} records, {args.dtype}, {result['threads']} thread(s), batches of "
          f"{args.batch_size}: plain {med_b:.2f} samples/s (median; "
          f"{result['median_prompt_tokens']:.0f} tokens a prompt), with the "
          f"{result['prefix_tokens']}-token shared prefix run once {med_a:.2f} samples/s, "
          f"{med_a / med_b:.2f}x (overall {overall_b:.2f} -> {overall_a:.2f} samples/s, the "
          f"prefix pass and its check {setup_s:.2f} s included); largest P(Yes) difference "
          f"{worst:.2g}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
