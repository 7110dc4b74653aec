"""GORACS at a scale the dense cost matrix does not fit: the streaming engine on random data.

    python benchmarks/select_scale.py --json                        # 1,000,000 x 5,000, d 384
    python benchmarks/select_scale.py --n-train 100000 --n-valid 2000 --budget 256 --json
    python benchmarks/select_scale.py --compare-dense 20000 --json  # both engines, N x 5,000
    python benchmarks/select_scale.py --n-train 50000 --n-valid 1000 --budget 128 --ray local:2

Prints the seconds in all (``total_s``), the peak resident memory (``peak_mb``, VmHWM; and
``inputs_mb``, the resident memory once the instance is made, before selecting), POO
after greedy initialisation and at the end, and the engine used (``mode``). With
``--compare-dense N`` it runs both engines on an N x V instance and prints ``poo_dense``,
``poo_streaming`` and both times. With ``--ray local:N|auto|HOST:PORT`` it runs the streaming
engine on the same instance here and with its passes as Ray tasks, and prints ``poo_local``,
``poo_ray`` (equal), ``same_indices``, both times and ``speedup`` (local / Ray); the Ray
session is opened before either run and its start-up (``ray_start_s``) counted in neither, and
a small selection runs first on each side so that loading the numba kernels is not timed.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from goracs.select import GORACS, SelectionData


def peak_mb() -> float:
    """Peak resident memory of this process in MB (VmHWM, else ru_maxrss)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def resident_mb() -> float:
    """Resident memory of this process now, in MB (VmRSS)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def instance(n_train: int, n_valid: int, dim: int, seed: int = 0) -> SelectionData:
    """Gaussian embeddings and uniform gradient norms, drawn in float32 (no float64 copy of
    the pool, so that the peak measured is the selection's, not the generator's)."""
    rng = np.random.default_rng(seed)
    return SelectionData(
        train_emb=rng.standard_normal(size=(n_train, dim), dtype=np.float32),
        valid_emb=rng.standard_normal(size=(n_valid, dim), dtype=np.float32),
        grad_norms=rng.uniform(1e4, 4e4, size=n_train).astype(np.float32),
    )


def run(data: SelectionData, args: argparse.Namespace, engine: str,
        ray: str | None = None) -> dict:
    sel = GORACS(budget=args.budget, lam=args.lam, max_iters=args.max_iters,
                 candidates=args.candidates, medoid_rounds=args.medoid_rounds,
                 engine=engine, max_memory=args.max_memory, ray=ray)
    t0 = time.perf_counter()
    sel.fit(data)
    info = sel.info_
    return {"total_s": round(time.perf_counter() - t0, 2), "mode": info["engine"],
            "poo_greedy": info["poo_greedy"], "poo_final": sel.objective_,
            "seconds": {k: round(v, 2) for k, v in sel.seconds_.items()},
            "cost_passes": info.get("cost_passes"), "swaps": info.get("swaps"),
            "ray": info.get("ray"), "indices": sel.indices_}


def compare_ray(args: argparse.Namespace) -> dict:
    """The same instance on the streaming engine here, then with its passes on Ray."""
    from goracs.cluster import check_ray, parse_ray, ray_session

    spec = parse_ray(args.ray)
    check_ray(spec)
    data = instance(args.n_train, args.n_valid, args.dim)
    inputs_mb = resident_mb()
    # a small selection first, here and on Ray, so that neither timing includes loading the
    # numba kernels (in this process, and in each Ray worker)
    small = instance(min(args.n_train, 4096), min(args.n_valid, 64), args.dim, seed=1)
    warm = argparse.Namespace(**{**vars(args), "budget": 8, "max_iters": 2})
    run(small, warm, "streaming")
    local = run(data, args, "streaming")
    t0 = time.perf_counter()
    with ray_session(spec):  # the selection finds this session and leaves it open
        start_s = round(time.perf_counter() - t0, 2)
        run(small, warm, "streaming", ray=args.ray)
        remote = run(data, args, "streaming", ray=args.ray)
    return {"n_train": args.n_train, "n_valid": args.n_valid, "dim": args.dim,
            "budget": args.budget, "lam": args.lam, "ray": args.ray,
            "poo_local": local["poo_final"], "poo_ray": remote["poo_final"],
            "same_indices": bool(np.array_equal(local["indices"], remote["indices"])),
            "local_s": local["total_s"], "ray_s": remote["total_s"],
            "speedup": round(local["total_s"] / remote["total_s"], 2),
            "ray_start_s": start_s, "ray_tasks": remote["ray"], "inputs_mb": round(inputs_mb, 1),
            "local_seconds": local["seconds"], "ray_seconds": remote["seconds"],
            "peak_mb": round(peak_mb(), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=1_000_000)
    ap.add_argument("--n-valid", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--budget", type=int, default=1024)
    ap.add_argument("--lam", type=float, default=0.5)
    ap.add_argument("--max-iters", type=int, default=100)
    ap.add_argument("--candidates", type=int, default=30)
    ap.add_argument("--medoid-rounds", type=int, default=20)
    ap.add_argument("--engine", default="auto", choices=["auto", "dense", "streaming"])
    ap.add_argument("--max-memory", default=None, help="memory budget, e.g. 6GB")
    ap.add_argument("--compare-dense", type=int, metavar="N",
                    help="run both engines on an N x n-valid instance instead")
    ap.add_argument("--ray", metavar="ADDRESS",
                    help="run the streaming engine here and on Ray (local:N, auto or "
                    "HOST:PORT) on the same instance; print both POO, times and the speed-up")
    ap.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = ap.parse_args()
    if args.ray:
        out = compare_ray(args)
    elif args.compare_dense:
        data = instance(args.compare_dense, args.n_valid, args.dim)
        inputs_mb = resident_mb()
        dense = run(data, args, "dense")
        stream = run(data, args, "streaming")
        out = {"n_train": args.compare_dense, "n_valid": args.n_valid, "dim": args.dim,
               "budget": args.budget, "lam": args.lam,
               "poo_dense": dense["poo_final"], "poo_streaming": stream["poo_final"],
               "same_indices": bool(np.array_equal(dense["indices"], stream["indices"])),
               "dense_s": dense["total_s"], "streaming_s": stream["total_s"],
               "dense_seconds": dense["seconds"], "streaming_seconds": stream["seconds"],
               "inputs_mb": round(inputs_mb, 1), "peak_mb": round(peak_mb(), 1)}
    else:
        data = instance(args.n_train, args.n_valid, args.dim)
        inputs_mb = resident_mb()
        res = run(data, args, args.engine)
        res.pop("indices")
        res.pop("ray")
        out = {"n_train": args.n_train, "n_valid": args.n_valid, "dim": args.dim,
               "budget": args.budget, "lam": args.lam, **res, "inputs_mb": round(inputs_mb, 1),
               "peak_mb": round(peak_mb(), 1)}
    if not args.json:
        for k, v in out.items():
            print(f"{k:16s} {v}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
