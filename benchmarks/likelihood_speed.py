"""Speed of likelihood ranking (``goracs evaluate --ranking likelihood``) on real MovieLens-1M
SeqRec test records, beside the plain way of scoring the same candidates.

    python benchmarks/likelihood_speed.py                  # 16 records, bf16 (~5 min)
    python benchmarks/likelihood_speed.py --n 4 --json     # quicker; last line is one JSON object
    python benchmarks/likelihood_speed.py --dtype fp32 --threads 2
    python benchmarks/likelihood_speed.py --no-rows        # packed with and without prefix

Each record's target and its 99 sampled negatives are scored, as log P(answer | prompt) under
the packaged SmolLM2-135M-Instruct, three ways:

* packed (ours): :func:`goracs.evaluate.likelihood.answer_log_likelihoods`, one forward pass of
  the prompt followed by all 100 answers, each answer seeing the prompt and itself only;
* packed + prefix (what ``goracs evaluate`` runs in fp32): the same pass, less the tokens that
  every record shares (the Alpaca preamble and the instruction, run once for all records,
  :func:`goracs.evaluate.likelihood.likelihood_prefix`), continuing from their key/value cache;
* rows (the plain way): prompt + answer as one row per candidate, right-padded, in batches of
  ``--rows`` rows, the log-probabilities of the answer tokens read from the usual causal pass.

The ways run record by record in turn, so that load from other jobs falls on all alike; the
figures are medians of the per-record seconds. The largest differences of the packed scores
from the other ways' are printed too (rounding: ~1e-4 nats in fp32, tenths in bf16), and how
many records' targets rank alike with and without the prefix (as ``goracs evaluate`` ranks).
``--no-rows`` leaves the slow plain way out.

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

    from goracs.lm import decoder_and_head, head_logits

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
    ap.add_argument("--no-rows", action="store_true",
                    help="time packed scoring with and without the shared prefix only")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    ap.add_argument("--json", action="store_true", help="print one JSON object last")
    args = ap.parse_args(argv)
    if args.n < 1 or args.rows < 1 or args.test_size < args.n:
        ap.error("need --n >= 1, --rows >= 1 and --test-size >= --n")

    import torch

    from goracs.data.prepare import build_prepared, default_domain, load_interactions
    from goracs.evaluate.constrain import answer_frame, answer_tokens
    from goracs.evaluate.likelihood import answer_log_likelihoods, likelihood_prefix
    from goracs.evaluate.metrics import rank_among_titles
    from goracs.evaluate.run import sample_test_indices
    from goracs.lm import load_lm
    from goracs.records import render_prompt

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

    prompts = [render_prompt(rec, False) for rec in records]

    def candidates(k: int) -> list[list[int]]:
        titles = [records[k]["target"], *records[k]["negatives"]]
        return [a + [eos] for a in answer_tokens(tok, prompts[k], [before + t + after
                                                                    for t in titles])]

    t = time.perf_counter()
    prefix = likelihood_prefix(model, tok, prompts, prompts[0], candidates(0)[:3], "cpu")
    prefix_s = time.perf_counter() - t
    if prefix is None:
        print("the shared prefix cannot be reused with this model; packed + prefix is "
              "packed", file=sys.stderr)

    packed_s: list[float] = []
    shared_s: list[float] = []
    rows_s: list[float] = []
    tokens: list[int] = []
    worst = worst_shared = 0.0
    same_rank = 0
    rank_moves: list[int] = []
    for k in range(len(records)):
        prompt = prompts[k]
        seqs = candidates(k)
        prompt_ids = tok(prompt, add_special_tokens=True)["input_ids"]
        tokens.append(len(prompt_ids) + sum(len(s) - 1 for s in seqs))
        # The packed ways swap turns from record to record, so neither always runs first.
        ways = [(packed_s, None), (shared_s, prefix)]
        scores = {}
        for spent, pre in (ways if k % 2 == 0 else ways[::-1]):
            t = time.perf_counter()
            scores[id(spent)] = answer_log_likelihoods(model, tok, prompt, seqs, "cpu", pre)
            spent.append(time.perf_counter() - t)
        a = scores[id(packed_s)]
        worst_shared = max(worst_shared, float(np.max(np.abs(a - scores[id(shared_s)]))))
        titles = [records[k]["target"], *records[k]["negatives"]]
        ranks = [rank_among_titles(-scores[id(w)], titles, titles[0]) for w in (packed_s,
                                                                                  shared_s)]
        same_rank += ranks[0] == ranks[1]
        rank_moves.append(abs(int(ranks[0]) - int(ranks[1])))
        line = (f"record {k + 1}/{len(records)}: packed {packed_s[-1]:.2f} s, packed + prefix "
                f"{shared_s[-1]:.2f} s")
        if not args.no_rows:
            t = time.perf_counter()
            b = score_rows(model, prompt_ids, seqs, args.rows, pad)
            rows_s.append(time.perf_counter() - t)
            worst = max(worst, float(np.max(np.abs(a - b))))
            line += f", rows {rows_s[-1]:.2f} s"
        print(line, file=sys.stderr)

    med_p, med_s = statistics.median(packed_s), statistics.median(shared_s)
    result: dict[str, Any] = {
        "records": len(records), "dtype": args.dtype, "threads": torch.get_num_threads(),
        "rows_per_batch": None if args.no_rows else args.rows,
        "median_packed_tokens": statistics.median(tokens),
        "prefix_tokens": 0 if prefix is None else len(prefix),
        "prefix_setup_s": round(prefix_s, 3),
        "median_s_packed": round(med_p, 3), "median_s_packed_prefix": round(med_s, 3),
        "prefix_speedup": round(med_p / med_s, 2),
        "max_abs_diff_prefix_nats": round(worst_shared, 4),
        "target_rank_same_prefix": same_rank, "max_target_rank_move_prefix": max(rank_moves)}
    text = (f"{len(records)} records, {args.dtype}, {result['threads']} thread(s): packed "
            f"{med_p:.2f} s a record (median; {result['median_packed_tokens']:.0f} tokens in "
            f"one pass); with the {result['prefix_tokens']}-token shared prefix run once "
            f"({prefix_s:.2f} s with its check) {med_s:.2f} s, {med_p / med_s:.2f}x faster, "
            f"largest difference {worst_shared:.4f} nats, the target's rank the same in "
            f"{same_rank} of {len(records)} records (moved by {max(rank_moves)} at most)")
    if not args.no_rows:
        med_r = statistics.median(rows_s)
        result.update(median_s_rows=round(med_r, 3), speedup=round(med_r / med_p, 2),
                      max_abs_diff_nats=round(worst, 4))
        text += (f"; rows of {args.rows} {med_r:.2f} s, packed is {med_r / med_p:.2f}x "
                 f"faster, largest score difference {worst:.4f} nats")
    print(text)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
