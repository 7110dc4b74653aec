"""The five stages of an experiment as calls into the library (no subprocesses).

Each function computes one unit and writes its output with the stage's own manifest last, so
a unit is either complete or absent; none of them decides whether to run (see
:mod:`goracs.experiment.runner`).
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

import goracs
from goracs.cache import path_fingerprint
from goracs.errors import GoracsError
from goracs.experiment.config import DataSource, ExperimentConfig, TaskConfig
from goracs.experiment.plan import MARKERS, RUN_RECORD, Run
from goracs.io import atomic_write_json, read_json
from goracs.outputs import OutputPlace
from goracs.prepared import features_match
from goracs.select import SelectionData, get_selector
from goracs.select.diagnostics import selection_diagnostics
from goracs.select.io import (
    CORESET_FILE,
    MissingEmbeddings,
    check_pool,
    read_embeddings,
    read_prepared,
    selection_files,
    validation_users,
    write_selection,
)

PREPARE_RECORD = "experiment-prepare.json"


class Skipped(Exception):
    """A run that cannot be made with the inputs at hand (reported, not a failure)."""


def prepare_data(dataset: str, source: DataSource, tc: TaskConfig, out: Path,
                 tables: dict[str, Any]) -> float:
    """Build the prepared folder of one (dataset, task); returns the seconds it took.

    ``tables`` caches the interaction table of each dataset, so the second task of a dataset
    does not read the raw files again.
    """
    from goracs.data.prepare import (
        build_prepared,
        default_domain,
        default_like_threshold,
        load_interactions,
        write_prepared,
    )
    from goracs.prompts import parse_domain

    t0 = time.perf_counter()
    if dataset not in tables:
        tables[dataset] = load_interactions(dataset, source.path, source.reviews, source.meta)
    if source.domain_word is not None:
        domain = parse_domain(source.domain_word)
    else:
        domain = default_domain(dataset)
        if domain is None:
            raise GoracsError(f"dataset {dataset} needs data.{dataset}.domain_word")
    like = (source.like_threshold if source.like_threshold is not None
            else default_like_threshold(dataset))
    p = tc.prepare
    prepared = build_prepared(tables[dataset], tc.task, domain, dataset=dataset,
                              valid_size=p.valid_size, test_size=p.test_size,
                              max_train=p.max_train, seed=p.seed, negatives=p.negatives,
                              negative_sampling=p.negative_sampling, like_threshold=like,
                              split=p.split)
    write_prepared(prepared, out)
    seconds = time.perf_counter() - t0
    atomic_write_json(out / PREPARE_RECORD, {"dataset": dataset, "task": tc.task,
                                             "settings": asdict(p), "source": asdict(source),
                                             "seconds": round(seconds, 3)})
    return seconds


def compute_features(data_dir: Path, tc: TaskConfig, progress: bool,
                     log: Callable[[str], None]) -> float:
    """Run :func:`goracs.features.pipeline.build_features` (which caches its expensive parts
    by content); returns the seconds it took."""
    from goracs.features.pipeline import build_features

    t0 = time.perf_counter()
    build_features(data_dir, tc.features, progress=progress, log=log)
    return time.perf_counter() - t0


def load_selection_data(data_dir: Path) -> SelectionData:
    """The arrays of ``data_dir/features`` as selection input, optional score files included
    (:func:`goracs.select.io.read_prepared`). Loaded once for every method of the folder and
    not checked here: each selector's ``fit`` checks the arrays it reads, so a broken one
    fails only the runs of methods that read it."""
    return read_prepared(data_dir, check=False)


def select(run: Run, params: Mapping[str, Any], data: SelectionData,
           records: list[dict[str, Any]], method: str | None = None,
           embedding: str = "default") -> float:
    """Select the run's coreset; writes ``coreset.json`` then ``selection.json`` (the same
    manifest as ``goracs select --data``, ``valid_users`` included, plus the coreset's
    ``diagnostics``, see :func:`goracs.select.diagnostics.selection_diagnostics`). Raises
    :class:`Skipped` when an input is missing. ``data`` holds the features' default
    embeddings; ``method`` is the registered method a variant row runs (default: the run's
    own name); ``embedding="llm"`` selects on the scoring LLM's embeddings instead (the
    diagnostics stay on the default ones, so that every method is measured alike)."""
    assert run.select_dir is not None and run.budget is not None
    cls = get_selector(method or run.method)
    default = data
    if embedding != "default":
        try:
            data = replace(data, **read_embeddings(run.data_dir, embedding, check=False))
        except MissingEmbeddings as exc:
            raise Skipped(f"{run.method} needs {run.data_dir.name}/features/{exc.path.name} "
                          "(features.embedding = \"both\")") from None
    selector = cls(budget=run.budget, seed=run.seed, **params)
    missing = data.missing(tuple(selector.requires))
    if missing:
        files = ", ".join(f"{run.data_dir.name}/features/{m[7:]}.npy"
                          if m.startswith("scores.") else m for m in missing)
        raise Skipped(f"{run.method} needs {files}, which `goracs features` has not written")
    check_pool(records, data.n_train, run.data_dir)
    features_match(run.data_dir, run.task, require_digests=False)
    t0 = time.perf_counter()
    selector.fit(data)
    manifest = selector.result().to_json()
    arrays, scores = selection_files(run.data_dir, embedding)
    manifest.update(
        train_digest=path_fingerprint(run.data_dir / "train.json"),
        inputs={k: str(p) for k, p in arrays.items()},
        scores={k: str(p) for k, p in scores.items() if k in data.scores},
        data=str(run.data_dir), task=run.task, coreset=CORESET_FILE)
    valid_users = validation_users(run.data_dir, selector.requires, data)
    if valid_users is not None:
        manifest["valid_users"] = valid_users
    manifest["diagnostics"] = selection_diagnostics(manifest["indices"], default)
    # all or nothing: written beside the folder, the manifest last, and swapped in
    write_selection(OutputPlace(run.select_dir, "select", flag="").check(), manifest, records)
    return time.perf_counter() - t0


def finetune(run: Run, cfg: ExperimentConfig, tc: TaskConfig, progress: bool) -> float:
    """Fine-tune the run's adapter on its coreset (or, for the full-data row, on the whole
    pool); :func:`goracs.train.finetune` resumes a killed run from its epoch checkpoints."""
    from goracs.records import load_records
    from goracs.train import finetune as train_lora

    assert run.finetune_dir is not None
    t0 = time.perf_counter()
    src = (run.select_dir / "coreset.json" if run.select_dir is not None
           else run.data_dir / "train.json")
    train = coreset_records(run) if run.select_dir is not None else load_records(src)
    valid = load_records(run.data_dir / "valid.json") if tc.use_valid else None
    settings = replace(tc.train, seed=run.seed if run.seed is not None else 0)
    train_lora(train, run.finetune_dir, settings, model=cfg.model, valid_records=valid,
               device=cfg.device, progress=progress,
               sources={"train": str(src), "valid": None if valid is None
                        else str(run.data_dir / "valid.json"), "preset": tc.preset,
                        "experiment": cfg.name})
    return time.perf_counter() - t0


def coreset_records(run: Run) -> list[dict[str, Any]]:
    """The run's coreset records: ``coreset.json``, or, when only ``selection.json`` is there
    (a selection restored from a committed record), the selected rows of the prepared
    ``train.json``, written back as ``coreset.json`` once the pool is checked to be the one the
    selection was made on (``train_digest``)."""
    from goracs.records import load_records

    assert run.select_dir is not None
    core = run.select_dir / "coreset.json"
    if core.is_file():
        return load_records(core)
    manifest = read_json(run.select_dir / MARKERS["select"], "a selection manifest")
    train_path = run.data_dir / "train.json"
    digest = manifest.get("train_digest")
    if digest is None:
        raise GoracsError(f"{core} is missing and {run.select_dir / MARKERS['select']} records "
                          "no train_digest to rebuild it from; delete the folder to reselect")
    if digest != path_fingerprint(train_path):
        raise GoracsError(f"{run.select_dir}: selected from another {train_path} (digest "
                          "differs); delete the folder to reselect")
    pool = load_records(train_path)
    idx = manifest.get("indices")
    if not isinstance(idx, list) or not all(isinstance(i, int) and 0 <= i < len(pool)
                                            for i in idx):
        raise GoracsError(f"{run.select_dir / MARKERS['select']}: indices outside the pool")
    records = [pool[i] for i in idx]
    atomic_write_json(core, records)
    return records


def evaluate(run: Run, cfg: ExperimentConfig, tc: TaskConfig, progress: bool) -> float:
    """Score the test split with the run's adapter (none for the zero-shot row)."""
    from goracs.evaluate.run import evaluate as score

    t0 = time.perf_counter()
    score(run.data_dir, run.task, run.eval_dir, tc.evaluate, model=cfg.model,
          adapter=run.finetune_dir, device=cfg.device, progress=progress)
    return time.perf_counter() - t0


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float | None]:
    """``{"sampled": {"NDCG@10": x}}`` -> ``{"sampled.NDCG@10": x}``; numbers and None kept."""
    out: dict[str, float | None] = {}
    for k, v in metrics.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_metrics(v, name + "."))
        elif v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)):
            out[name] = None if v is None else float(v)
    return out


def git_commit() -> str | None:
    """The commit of the goracs source tree, with ``+modified`` when tracked files differ from
    it; None outside a git checkout."""
    src = Path(goracs.__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=20)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = head.stdout.strip()
    return commit + ("+modified" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def run_record(run: Run, out: Path, commit: str | None) -> dict[str, Any]:
    """The row of ``results.csv`` for a complete run, gathered from its stage manifests."""
    metrics_doc = read_json(run.eval_dir / MARKERS["evaluate"])
    rec: dict[str, Any] = {
        "dataset": run.dataset, "task": run.task, "method": run.method,
        "budget": run.budget, "seed": run.seed,
        "metrics": flatten_metrics(metrics_doc.get("metrics") or {}),
        "test_scored": metrics_doc.get("data", {}).get("scored"),
        "seconds": {"select": None, "finetune": None,
                    "evaluate": metrics_doc.get("seconds", {}).get("total")},
        "coreset_digest": None, "poo": None,
        "paths": {"eval": run.eval_dir.relative_to(out).as_posix()},
        "keys": run.keys, "commit": commit, "goracs_version": goracs.__version__,
    }
    if run.select_dir is not None:
        sel = read_json(run.select_dir / MARKERS["select"])
        rec["seconds"]["select"] = sel.get("seconds", {}).get("total")
        rec["poo"] = sel.get("poo")
        idx = np.asarray(sel["indices"], dtype=np.int64)
        rec["coreset_digest"] = hashlib.sha256(idx.tobytes()).hexdigest()[:16]
        rec["paths"]["select"] = run.select_dir.relative_to(out).as_posix()
    if run.finetune_dir is None:  # the zero-shot row trains on nothing
        rec["budget"] = 0
    else:
        tr = read_json(run.finetune_dir / MARKERS["finetune"])
        rec["seconds"]["finetune"] = tr.get("seconds", {}).get("train")
        rec["train_samples"] = tr.get("data", {}).get("train_samples")
        rec["best_epoch"] = tr.get("best_epoch")
        rec["paths"]["finetune"] = run.finetune_dir.relative_to(out).as_posix()
        if run.budget is None:  # the full-data row: its budget is the whole pool
            rec["budget"] = rec["train_samples"]
    return rec


def write_run_record(run: Run, out: Path, commit: str | None) -> dict[str, Any]:
    rec = run_record(run, out, commit)
    atomic_write_json(run.eval_dir / RUN_RECORD, rec)
    return rec
