"""Greedy past saturation: the capacitated continuation against index order, on the standard
instance.

    python benchmarks/greedy_saturation.py        # bench-ml1m, n=1000, lambda 0.1 and 0.5
    python benchmarks/greedy_saturation.py --lams 0.5 --repeats 1 --json

For each lambda and each ``saturation`` mode ("capacity", the default, and "index", the plain
greedy) it runs GORACS twice: with the default settings, and as the method's two-stage ITRA
(``medoid_rounds=0, patience=None``). It prints how many picks had a positive relaxed gain, how
many were chosen past saturation by fill cost, how many of the zero-gain picks the final
coreset still holds, POO right after initialisation and at the end, and seconds (the greedy
stage, the first exact solve and the whole selection, medians over ``--repeats`` runs; the
selections themselves are checked to be identical across repeats).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from goracs.select import GORACS, SelectionData
from goracs.select.cost import poo_cost
from goracs.select.greedy import greedy_select

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bench-ml1m"
CONFIGS = {"default": {}, "itra": {"medoid_rounds": 0, "patience": None}}


def load(path: str) -> SelectionData:
    d = Path(path)
    if not (d / "train_emb.npy").is_file():
        sys.exit(f"greedy_saturation: no instance at {d} (give --data DIR)")
    return SelectionData(
        train_emb=np.load(d / "train_emb.npy", allow_pickle=False),
        valid_emb=np.load(d / "valid_emb.npy", allow_pickle=False),
        grad_norms=np.load(d / "grad_norms.npy", allow_pickle=False),
    )


def warm_up() -> float:
    """Compile (or load cached) kernels of both modes on a toy instance that saturates."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(1)
    g = rng.uniform(1, 2, size=80).astype(np.float32)
    g[:6] *= 4
    toy = SelectionData(train_emb=rng.normal(size=(80, 4)).astype(np.float32),
                        valid_emb=rng.normal(size=(30, 4)).astype(np.float32), grad_norms=g)
    for mode in ("capacity", "index"):
        GORACS(budget=15, lam=0.5, max_iters=5, saturation=mode).fit(toy)
    return time.perf_counter() - t0


def measure(data: SelectionData, budget: int, lam: float, mode: str, config: str,
            repeats: int, zero_gain: np.ndarray) -> dict:
    """One setting, ``repeats`` times; ``zero_gain``: the picks the initialisation made with
    zero relaxed gain (those the final coreset may or may not keep)."""
    runs = []
    for _ in range(repeats):
        sel = GORACS(budget=budget, lam=lam, saturation=mode, **CONFIGS[config]).fit(data)
        runs.append(sel)
    first = runs[0]
    for other in runs[1:]:
        if not np.array_equal(other.indices_, first.indices_):
            raise AssertionError(f"lambda {lam} {mode} {config}: repeats differ")
    info = first.info_

    def med(stage: str) -> float:
        return round(statistics.median(r.seconds_.get(stage, 0.0) for r in runs), 3)

    return {
        "lam": lam, "saturation": mode, "config": config, "budget": budget,
        "positive_gain_picks": info["positive_gain_picks"],
        "capacity_picks": info["capacity_picks"],
        "zero_gain_kept": int(np.isin(zero_gain, first.indices_).sum()),
        "poo_init": round(info["poo_greedy"], 5),
        "poo_medoid": None if info.get("poo_medoid") is None else round(info["poo_medoid"], 5),
        "poo_final": round(first.objective_, 5),
        "swaps": info.get("swaps", 0),
        "greedy_s": med("greedy"), "exact_ot_s": med("exact_ot"), "medoid_s": med("medoid"),
        "refine_s": med("refine"), "total_s": med("total"), "repeats": repeats,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--lams", type=float, nargs="+", default=[0.1, 0.5])
    ap.add_argument("--modes", nargs="+", default=["capacity", "index"],
                    choices=["capacity", "index"])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--repeats", type=int, default=3, help="runs per setting (time medians)")
    ap.add_argument("--json", action="store_true", help="also print one JSON line per row")
    args = ap.parse_args()

    warmup_s = warm_up()
    data = load(args.data)
    print(f"instance {args.data}: {data.train_emb.shape[0]} train x {data.valid_emb.shape[0]} "
          f"valid, n={args.budget}; JIT warm-up {warmup_s:.1f} s; seconds are medians of "
          f"{args.repeats} run(s)")
    head = (f"{'lambda':>6} {'saturation':>10} {'config':>8} {'pos.gain':>8} {'by fill':>7} "
            f"{'0-gain kept':>11} {'POO init':>9} {'POO end':>9} {'swaps':>5} {'greedy s':>8} "
            f"{'1st OT s':>8} {'total s':>8}")
    print(head)
    rows = []
    for lam in args.lams:
        cost = poo_cost(data.train_emb, data.valid_emb, data.grad_norms, lam)
        zero_gain = {}
        for mode in args.modes:
            init = greedy_select(cost, args.budget, saturation=mode)
            zero_gain[mode] = init.indices[init.gains == 0]
        del cost
        for config in args.configs:
            for mode in args.modes:
                r = measure(data, args.budget, lam, mode, config, args.repeats, zero_gain[mode])
                rows.append(r)
                print(f"{lam:>6} {mode:>10} {config:>8} {r['positive_gain_picks']:>8} "
                      f"{r['capacity_picks']:>7} {r['zero_gain_kept']:>11} "
                      f"{r['poo_init']:>9.5f} {r['poo_final']:>9.5f} {r['swaps']:>5} "
                      f"{r['greedy_s']:>8.2f} {r['exact_ot_s']:>8.2f} {r['total_s']:>8.2f}",
                      flush=True)
    if args.json:
        for r in rows:
            print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
