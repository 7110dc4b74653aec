"""Which marginal-impact estimate ranks exchanges better: the R-th smallest or R-th largest?

method.md (section 4) derives F_i with t* = the R-th *smallest* d_ij; the reference code takes
the R-th *largest*. On small instances drawn from the standard one (or random ones), every
exchange (i in S, o outside) is evaluated exactly, and each estimate's promise F_i - F_o is
compared with the exact drop in POO: Spearman rank correlation over all pairs, and how often
each estimate's top-ranked pair really improves.

    python benchmarks/impact_ranking.py            # 5 instances of 400 x 100, n = 20
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from goracs.select.cost import poo_cost
from goracs.select.greedy import greedy_init
from goracs.select.marginal import _two_smallest
from goracs.select.transport import TransportState

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bench-ml1m"


def impacts(cost: np.ndarray, idx: np.ndarray, x: np.ndarray, largest: bool) -> np.ndarray:
    """F_i for every row, with t* the R-th smallest (method.md) or R-th largest d_ij."""
    n_sel, nv = idx.shape[0], cost.shape[1]
    r = math.ceil(nv / n_sel)
    b1, b2, a1 = _two_smallest(cost, idx, x)
    slot = np.full(cost.shape[0], -1)
    slot[idx] = np.arange(n_sel)
    out = np.empty(cost.shape[0])
    for i in range(cost.shape[0]):
        f = np.where((slot[i] >= 0) & (a1 == slot[i]), b2, b1)
        d = np.sort(cost[i].astype(np.float64) - f)
        t = d[-r] if largest else d[r - 1]
        out[i] = t / n_sel + np.minimum(d - t, 0.0).sum() / nv
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--instances", type=int, default=5)
    ap.add_argument("--train", type=int, default=400)
    ap.add_argument("--valid", type=int, default=100)
    ap.add_argument("--budget", type=int, default=20)
    ap.add_argument("--lam", type=float, default=0.5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    d = Path(args.data)
    real = (d / "train_emb.npy").is_file()
    if real:
        te_all = np.load(d / "train_emb.npy", allow_pickle=False)
        ve_all = np.load(d / "valid_emb.npy", allow_pickle=False)
        g_all = np.load(d / "grad_norms.npy", allow_pickle=False)
    rows = []
    for k in range(args.instances):
        rng = np.random.default_rng(k)
        if real:
            ti = rng.choice(te_all.shape[0], args.train, replace=False)
            vi = rng.choice(ve_all.shape[0], args.valid, replace=False)
            te, ve, g = te_all[ti], ve_all[vi], g_all[ti]
        else:
            te = rng.normal(size=(args.train, 16)).astype(np.float32)
            ve = rng.normal(size=(args.valid, 16)).astype(np.float32)
            g = rng.uniform(1, 3, args.train).astype(np.float32)
        cost = poo_cost(te, ve, g, args.lam)
        state = TransportState(cost, greedy_init(cost, args.budget))
        idx, x = state.indices.copy(), state.row_duals().copy()
        inside = np.sort(idx)
        outside = np.setdiff1d(np.arange(cost.shape[0]), inside)
        drop = np.empty((inside.shape[0], outside.shape[0]))
        for a, i in enumerate(inside):
            for b, o in enumerate(outside):
                drop[a, b] = state.poo - state.try_swap(int(i), int(o))
        row = {"instance": k, "improving_share": float((drop > 1e-12).mean())}
        for name, largest in (("rth_smallest", False), ("rth_largest", True)):
            f = impacts(cost, idx, x, largest)
            promise = f[inside][:, None] - f[outside][None, :]
            row[f"{name}_spearman"] = float(spearmanr(promise.ravel(), drop.ravel())[0])
            top = np.unravel_index(np.argmax(promise), promise.shape)
            row[f"{name}_top_improves"] = bool(drop[top] > 1e-12)
            best30 = np.argsort(-promise.ravel(), kind="stable")[:30]
            row[f"{name}_top30_improving"] = float((drop.ravel()[best30] > 1e-12).mean())
        rows.append(row)
        print(json.dumps(row))
    summary = {key: float(np.median([r[key] for r in rows])) for key in rows[0]
               if key != "instance"}
    print("median over instances:", json.dumps(summary))
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
