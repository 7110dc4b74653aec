"""The runner's bookkeeping without a model: runs that cannot start are skipped, runs that fail
are reported, neither stops the others, and the tables list them all."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from experiment_helpers import config, make_prepared

from goracs.experiment.plan import build_plan
from goracs.experiment.runner import ExperimentRunner, Logger


def test_skipped_and_failed_runs_are_reported_not_fatal(tmp_path: Path):
    cfg = config(methods=["el2n", "goracs"], seeds=[0], zero_shot=False)
    g = build_plan(cfg, tmp_path)[0]
    arrays = make_prepared(g.data_dir, cfg.tasks["ctr"].features)
    grads = arrays["grad_norms"].copy()
    grads[3] = np.nan  # a broken features file: GORACS must fail on it, in one line
    np.save(g.data_dir / "features" / "grad_norms.npy", grads)

    log = io.StringIO()
    summary = ExperimentRunner(cfg, tmp_path, log=Logger(log), command="goracs experiment x"
                               ).run()
    lines = log.getvalue().splitlines()
    assert lines[0].split() == ["prepare", "ml-1m", "ctr", "cached"]
    assert lines[1].split() == ["features", "ml-1m", "ctr", "cached"]
    assert lines[2].startswith("select   ml-1m ctr el2n b=4 seed=0") and " skipped " in lines[2]
    assert lines[3].startswith("select   ml-1m ctr goracs b=4 seed=0") and " failed " in lines[3]
    assert "grad-norms contains NaN or inf" in lines[3] and len(lines) == 4
    assert summary.count("skipped") == 1 and summary.count("failed") == 1
    assert not any(r.select_dir.exists() for r in g.runs)

    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [(r["method"], r["status"]) for r in rows] == [("el2n", "skipped"),
                                                          ("goracs", "failed")]
    assert rows[1]["message"] == "select: grad-norms contains NaN or inf"
    md = (tmp_path / "table.md").read_text()
    assert "1 of 1 skipped: el2n needs" in md and "1 of 1 failed: select: grad-norms" in md
    assert "0 done, 1 skipped, 1 failed, 0 not run" in md
    assert (tmp_path / "config.toml").exists() is False  # parsed from a dict: no source text


def test_until_select_and_a_variant_on_the_llm_embeddings(tmp_path: Path):
    """`--until select` selects every coreset and stops; the goracs-llm row selects on the
    LLM's arrays, so its coreset differs from goracs's on the encoder's."""
    import json

    cfg = config(methods=["goracs", "goracs-llm"], seeds=[0], zero_shot=False,
                 variants={"goracs-llm": {"method": "goracs", "embedding": "llm"}},
                 task_ctr={"features": {"embedding": "both"}})
    g = build_plan(cfg, tmp_path)[0]
    make_prepared(g.data_dir, cfg.tasks["ctr"].features)
    feats = g.data_dir / "features"
    rng = np.random.default_rng(7)
    # LLM embeddings in another geometry: the same clusters as the labels would give
    np.save(feats / "llm_train_emb.npy", rng.normal(size=(40, 5)).astype(np.float32))
    np.save(feats / "llm_valid_emb.npy", rng.normal(size=(10, 5)).astype(np.float32))

    log = io.StringIO()
    summary = ExperimentRunner(cfg, tmp_path, log=Logger(log), until="select").run()
    assert summary.count("skipped") == 2 and summary.count("failed") == 0
    runs = {r.method: r for r in g.runs}
    for r in runs.values():
        assert (r.select_dir / "selection.json").is_file()
        assert not r.finetune_dir.exists() and not r.eval_dir.exists()
    enc = json.loads((runs["goracs"].select_dir / "selection.json").read_text())
    llm = json.loads((runs["goracs-llm"].select_dir / "selection.json").read_text())
    assert llm["inputs"]["train_emb"].endswith("llm_train_emb.npy")
    assert enc["inputs"]["train_emb"].endswith("/train_emb.npy")
    assert enc["indices"] != llm["indices"]
    assert "stopped after select (--until)" in (tmp_path / "table.md").read_text()
