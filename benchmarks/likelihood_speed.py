"""Speed of likelihood ranking (``goracs evaluate --ranking likelihood``) on real MovieLens-1M
SeqRec test records, beside the plain way of scoring the same candidates.

    python benchmarks/likelihood_speed.py                  # 16 records, bf16 (~5 min)
    python benchmarks/likelihood_speed.py --n 4 --json     # quicker; last line is one JSON object
    python benchmarks/likelihood_speed.py --dtype fp32 --threads 2

Each record's target and its 99 sampled negatives are scored, as log P(answer | prompt) under
the packaged SmolLM2-135M-Instruct, two ways:

* packed (ours): :func:`goracs.evaluate.seqrec.answer_log_likelihoods`, one forward pass of
  the prompt followed by all 100 answers, each answer seeing the prompt and itself only;
* rows (the plain way): prompt + answer as one row per candidate, right-padded, in batches of
  ``--rows`` rows, the log-probabilities of the answer tokens read from the usual causal pass.

The two ways run record by record in turn, so that load from other jobs falls on both alike;
the figures are medians of the per-record seconds. The largest difference between the two
ways' scores is printed too (rounding: ~1e-4 nats in fp32, tenths in bf16).

The records are the last ``--test-size`` windows in time of ML-1M (the ``goracs prepare
--dataset ml-1m --task seqrec`` split, seed 0), ``--n`` of them drawn with seed 0, as
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


def score_rows(model: Any, prompt_ids: Sequence[int], answers: Sequence[Sequence[int]],
               rows: int, pad_id: int) -> np.ndarray:
    """log P(answer | prompt) for each answer, one right-padded row (prompt + answer) per
    candidate; the output head runs only where an answer token is predicted, as it does in
    the packed way, so the two differ in the decoder's work alone."""
    import torch

    from goracs.train.model import decoder_and_head, head_logits

    decoder, head, cap = decoder_and_head(model)
    p = len(prompt_ids)
    out = np.zeros(len(answers), dtype=np.float64)
    for s in range(0, len(answers), rows):
        chunk = answers[s:s + rows]
        width = p + max(len(a) for a in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, a in enumerate(chunk):
            seq = list(prompt_ids) + [int(t) for t in a]
            ids[r, :len(seq)] = torch.tensor(seq)
            mask[r, :len(seq)] = 1
        row_of = torch.tensor([r for r, a in enumerate(chunk) for _ in a])
        step_of = torch.tensor([p - 1 + i for a in chunk for i in range(len(a))])
        target = torch.tensor([int(t) for a in chunk for t in a])
        with torch.no_grad():
            hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
            logp = torch.log_softmax(head_logits(head, hidden[row_of, step_of], cap).float(), -1)
        picked = logp[torch.arange(len(target)), target].double().numpy()
        np.add.at(out, s + row_of.numpy(), picked)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=16, help="test records scored (default 16)")
    ap.add_argument("--test-size", type=int, default=1000,
                    help="size of the test split they are drawn from (default 1000)")
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--rows", type=int, default=20,
                    help="candidates per padded batch in the plain way (default 20)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    ap.add_argument("--json", action="store_true", help="print one JSON object last")
    args = ap.parse_args(argv)
    if args.n < 1 or args.rows < 1 or args.test_size < args.n:
        ap.error("need --n >= 1, --rows >= 1 and --test-size >= --n")

    import torch

    from goracs.data.prepare import build_prepared, default_domain, load_interactions
    from goracs.evaluate.constrain import answer_frame, answer_tokens
    from goracs.evaluate.run import sample_test_indices
    from goracs.evaluate.seqrec import answer_log_likelihoods
    from goracs.features.samples import render_prompt
    from goracs.train.model import load_lm

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    prepared = build_prepared(load_interactions("ml-1m"), "seqrec", default_domain("ml-1m"),
                              dataset="ml-1m", valid_size=200, test_size=args.test_size,
                              max_train=1000, seed=0)
    test = prepared.splits["test"]
    records = [test[i] for i in sample_test_indices(len(test), args.n, 0)]
    model, tok, _ = load_lm(None, None, dtype=args.dtype, device="cpu")
    model.eval()
    before, after = answer_frame(records)
    eos = int(tok.eos_token_id)
    pad = int(tok.pad_token_id) if tok.pad_token_id is not None else eos

    packed_s: list[float] = []
    rows_s: list[float] = []
    tokens: list[int] = []
    worst = 0.0
    for k, rec in enumerate(records):
        prompt = render_prompt(rec, False)
        titles = [rec["target"], *rec["negatives"]]
        seqs = [a + [eos] for a in answer_tokens(tok, prompt, [before + t + after
                                                               for t in titles])]
        prompt_ids = tok(prompt, add_special_tokens=True)["input_ids"]
        tokens.append(len(prompt_ids) + sum(len(s) - 1 for s in seqs))
        t = time.perf_counter()
        a = answer_log_likelihoods(model, tok, prompt, seqs, "cpu")
        packed_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        b = score_rows(model, prompt_ids, seqs, args.rows, pad)
        rows_s.append(time.perf_counter() - t)
        worst = max(worst, float(np.max(np.abs(a - b))))
        print(f"record {k + 1}/{len(records)}: packed {packed_s[-1]:.2f} s, rows "
              f"{rows_s[-1]:.2f} s", file=sys.stderr)

    med_p, med_r = statistics.median(packed_s), statistics.median(rows_s)
    result = {"records": len(records), "dtype": args.dtype, "threads": torch.get_num_threads(),
              "rows_per_batch": args.rows, "median_packed_tokens": statistics.median(tokens),
              "median_s_packed": round(med_p, 3), "median_s_rows": round(med_r, 3),
              "speedup": round(med_r / med_p, 2), "max_abs_diff_nats": round(worst, 4)}
    print(f"{len(records)} records, {args.dtype}, {result['threads']} thread(s): packed "
          f"{med_p:.2f} s a record (median; {result['median_packed_tokens']:.0f} tokens in one "
          f"pass), rows of {args.rows} {med_r:.2f} s; packed is {med_r / med_p:.2f}x faster; "
          f"largest score difference {worst:.4f} nats")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
