"""Helpers of the fault-injection suite: run goracs (in this process or another), snapshot a
folder tree, and build small inputs as the commands write them."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from goracs.cli import main

CTR_INSTRUCTION = ('Given the user\'s preference and unpreference, identify whether the user '
                   'will like the target movie by answering "Yes" or "No".')


def call(argv: list[str], capsys: Any) -> tuple[int, str, str]:
    """Run ``goracs ARGV`` in this process: (exit status, stdout, stderr). Argument errors,
    which argparse ends with SystemExit, give their status like any other."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:
        code = int(stop.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def env(**extra: str) -> dict[str, str]:
    """The environment a goracs subprocess runs in: one thread, no bytecode writes."""
    e = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1",
         "PYTHONDONTWRITEBYTECODE": "1"}
    e.pop("GORACS_FAULT", None)
    e.update(extra)
    return e


def command(argv: list[str]) -> list[str]:
    """The command line of ``goracs ARGV`` in a subprocess."""
    return [sys.executable, "-m", "goracs.cli", *[str(a) for a in argv]]


def run_cli(argv: list[str], cwd: Path, timeout: float = 300,
            **extra_env: str) -> subprocess.CompletedProcess:
    """Run ``goracs ARGV`` in another process and wait for it."""
    return subprocess.run(command(argv), cwd=cwd, env=env(**extra_env), capture_output=True,
                          text=True, timeout=timeout)


def assert_refused(code: int, err: str, pattern: str) -> str:
    """Assert exit status 2 and exactly one line on stderr matching ``pattern``, no
    traceback; return the line."""
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (relative path -> content digest, or ``dir``/``link``)."""
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def records(n: int, start: int = 0) -> list[dict[str, Any]]:
    """``n`` small CTR Alpaca records."""
    return [{"instruction": CTR_INSTRUCTION,
             "input": f"User Preference: \"Film {k} (1990)\"\nWhether the user will like the "
                      f"target movie \"Film {k + 1} (1991)\"?",
             "output": "Yes" if k % 3 else "No", "user": f"u{k % 7}",
             "target": f"Film {k + 1} (1991)"} for k in range(start, start + n)]


def write_json(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def arrays(folder: Path, n: int = 120, v: int = 30, d: int = 8, seed: int = 0
           ) -> dict[str, Path]:
    """Selection inputs as .npy files: embeddings, gradient norms and CTR labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    data = {"train": rng.normal(size=(n, d)).astype(np.float32),
            "valid": rng.normal(size=(v, d)).astype(np.float32),
            "grads": rng.uniform(1, 3, size=n).astype(np.float32),
            "tl": (np.arange(n) % 3 != 0).astype(np.int64),
            "vl": (np.arange(v) % 3 != 0).astype(np.int64)}
    out = {}
    for k, a in data.items():
        out[k] = folder / f"{k}.npy"
        np.save(out[k], a)
    return out


def select_args(a: dict[str, Path], out: Path, budget: int = 10) -> list[str]:
    """``goracs select`` on the arrays of :func:`arrays`."""
    return ["select", "--train-emb", a["train"], "--valid-emb", a["valid"], "--grad-norms",
            a["grads"], "--budget", str(budget), "--lam", "0.5", "--max-iters", "20",
            "--candidates", "5", "--out", out]


def prepared(tmp: Path, capsys: Any, name: str = "data", n_train: int = 60,
             n_valid: int = 15, task: str | None = "ctr") -> Path:
    """A prepared folder written by ``goracs prepare --dataset json`` itself."""
    src = tmp / f"{name}-src"
    write_json(src / "train.json", records(n_train))
    write_json(src / "valid.json", records(n_valid, start=1000))
    write_json(src / "test.json", records(10, start=2000))
    argv = ["prepare", "--dataset", "json", "--train", src / "train.json", "--valid",
            src / "valid.json", "--test", src / "test.json", "--out", tmp / name]
    if task is not None:
        argv += ["--task", task]
    code, _, err = call(argv, capsys)
    assert code == 0, err
    return tmp / name


def fake_features(data_dir: Path, task: str = "ctr", seed: int = 0, d: int = 6) -> Path:
    """``DIR/features`` as ``goracs features`` leaves it (synthetic arrays, a manifest with the
    task and the digests of the records), without loading a model."""
    from goracs.cache import path_fingerprint

    train = json.loads((data_dir / "train.json").read_text())
    valid = json.loads((data_dir / "valid.json").read_text())
    rng = np.random.default_rng(seed)
    feats = data_dir / "features"
    feats.mkdir(parents=True, exist_ok=True)
    files = {"train_emb": rng.normal(size=(len(train), d)).astype(np.float32),
             "valid_emb": rng.normal(size=(len(valid), d)).astype(np.float32),
             "grad_norms": rng.uniform(1, 2, len(train)).astype(np.float32)}
    if task == "ctr":
        files["train_labels"] = np.array([r["output"] == "Yes" for r in train], np.int64)
        files["valid_labels"] = np.array([r["output"] == "Yes" for r in valid], np.int64)
    for k, arr in files.items():
        np.save(feats / f"{k}.npy", arr)
    write_json(feats / "features.json", {
        "task": task, "n_train": len(train), "n_valid": len(valid),
        "files": {k: f"{k}.npy" for k in files},
        "digests": {"train": path_fingerprint(data_dir / "train.json"),
                    "valid": path_fingerprint(data_dir / "valid.json"), "settings": "test"},
        "settings": {}, "grad_norms": {}})
    return feats
