"""Small hand-made experiment inputs: configs, prepared folders with feature arrays, and
per-run records, for the tests that need no model."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

from goracs.cache import path_fingerprint
from goracs.experiment import parse_config
from goracs.experiment.plan import features_doc

BASE = {
    "name": "unit",
    "datasets": ["ml-1m"],
    "tasks": ["ctr"],
    "methods": ["random", "goracs"],
    "seeds": [0, 1, 2],
    "task": {"ctr": {"budgets": [4], "metrics": ["AUC", "log_loss"],
                     "prepare": {"max_train": 40, "valid_size": 10, "test_size": 10}}},
}


def config(**changes):
    """A parsed config: BASE with top-level keys replaced and ``task_ctr`` merged into the
    ctr task table."""
    doc = copy.deepcopy(BASE)
    task = changes.pop("task_ctr", None)
    doc.update(changes)
    if task:
        for k, v in task.items():
            doc["task"]["ctr"][k] = v
    return parse_config(doc, "unit")


def ctr_record(i: int, yes: bool) -> dict:
    return {"instruction": "Will the user like the target movie?",
            "input": f"User Preference: \"Film {i} (1990)\"\nWhether the user will like "
                     f"the target movie \"Film {i + 1} (1991)\"?",
            "output": "Yes" if yes else "No", "user": str(i), "target": f"Film {i + 1}"}


def make_prepared(data_dir: Path, features, n_train: int = 40, n_valid: int = 10,
                  seed: int = 0, el2n: bool = False) -> dict[str, np.ndarray]:
    """A prepared CTR folder with real-looking features written as the features stage does."""
    rng = np.random.default_rng(seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    tl = (np.arange(n_train) % 2).astype(np.int64)
    vl = (np.arange(n_valid) % 2).astype(np.int64)
    (data_dir / "train.json").write_text(json.dumps([ctr_record(i, bool(y))
                                                     for i, y in enumerate(tl)]))
    (data_dir / "valid.json").write_text(json.dumps([ctr_record(100 + i, bool(y))
                                                     for i, y in enumerate(vl)]))
    (data_dir / "meta.json").write_text(json.dumps({
        "task": "ctr", "counts": {"splits": {"train": {"samples": n_train},
                                             "valid": {"samples": n_valid},
                                             "test": {"samples": 10}}}}))
    feats = data_dir / "features"
    feats.mkdir(exist_ok=True)
    arrays = {"train_emb": rng.normal(size=(n_train, 6)).astype(np.float32),
              "valid_emb": rng.normal(size=(n_valid, 6)).astype(np.float32),
              "grad_norms": rng.uniform(0.5, 2.0, size=n_train).astype(np.float32),
              "train_labels": tl, "valid_labels": vl}
    if el2n:
        arrays["el2n"] = rng.uniform(size=n_train).astype(np.float32)
    for k, v in arrays.items():
        np.save(feats / f"{k}.npy", v)
    (feats / "features.json").write_text(json.dumps({
        "settings": features_doc(features), "seconds": {"total": 12.5}, "task": "ctr",
        "digests": {"train": path_fingerprint(data_dir / "train.json"),
                    "valid": path_fingerprint(data_dir / "valid.json"), "settings": "test"}}))
    return arrays


def write_record(run, out: Path, metrics: dict, seconds: dict, digest: str | None = None,
                 budget: int | None = None) -> None:
    """A finished run's record, as the runner writes it after evaluation."""
    run.eval_dir.mkdir(parents=True, exist_ok=True)
    (run.eval_dir / "metrics.json").write_text(json.dumps({"metrics": metrics}))
    rec = {"dataset": run.dataset, "task": run.task, "method": run.method,
           "budget": run.budget if budget is None else budget, "seed": run.seed,
           "metrics": metrics, "seconds": seconds, "coreset_digest": digest, "poo": None,
           "commit": "abc123"}
    (run.eval_dir / "run.json").write_text(json.dumps(rec))


def write_predictions(g, strong: str = "goracs", n: int = 400, seed: int = 0) -> None:
    """A CTR ``test.json`` of ``n`` users in the group's prepared folder and, beside every
    finished run's record, its ``predictions.jsonl`` on those users: method ``strong`` scores
    with signal, the others at random."""
    rng = np.random.default_rng(seed)

    def record(i: int) -> dict:
        liked = [f'"Liked {k}"' for k in range(int(rng.integers(0, 4)))]
        disliked = [f'"Disliked {k}"' for k in range(int(rng.integers(0, 4)))]
        return {"instruction": "Will the user like it?",
                "input": f"User Preference: {', '.join(liked)}\nUser Unpreference: "
                         f"{', '.join(disliked)}\nWhether the user will like the target "
                         f'movie "Film {i}"?',
                "output": "Yes" if rng.integers(0, 2) else "No", "user": f"u{i}",
                "target": f"Film {i}"}

    test = [record(i) for i in range(n)]
    (g.data_dir / "test.json").write_text(json.dumps(test))
    y = np.array([int(r["output"] == "Yes") for r in test])
    for run in g.runs:
        if (run.eval_dir / "run.json").is_file():
            p = np.clip(y * (0.5 if run.method == strong else 0.0) + rng.random(n) * 0.5, 0, 1)
            rows = [{"index": i, "user": test[i]["user"], "label": int(y[i]),
                     "p_yes": float(q)} for i, q in enumerate(p)]
            (run.eval_dir / "predictions.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in rows))
