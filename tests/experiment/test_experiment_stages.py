"""The select stage on a hand-made prepared folder: real selectors, manifests written last,
and methods whose scores the features lack reported as skipped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from experiment_helpers import config, make_prepared

from goracs.experiment import stages
from goracs.experiment.plan import build_plan


def _setup(tmp_path: Path, methods, el2n: bool):
    cfg = config(methods=methods, seeds=[0, 1])
    g = build_plan(cfg, tmp_path)[0]
    arrays = make_prepared(g.data_dir, cfg.tasks["ctr"].features, el2n=el2n)
    data = stages.load_selection_data(g.data_dir)
    records = json.loads((g.data_dir / "train.json").read_text())
    return cfg, g, arrays, data, records


def test_select_writes_coreset_and_manifest(tmp_path: Path):
    cfg, g, arrays, data, records = _setup(tmp_path, ["random", "goracs"], el2n=False)
    assert set(data.scores) == set() and data.train_labels is not None
    runs = {(r.method, r.seed): r for r in g.runs}
    for key in (("random", 0), ("random", 1), ("goracs", 0), ("goracs", 1)):
        run = runs[key]
        stages.select(run, cfg.tasks["ctr"].params[run.method], data, records)
        sel = json.loads((run.select_dir / "selection.json").read_text())
        core = json.loads((run.select_dir / "coreset.json").read_text())
        assert sel["method"] == key[0] and sel["budget"] == 4 and len(core) == 4
        assert core == [records[i] for i in sel["indices"]]
        assert sel["task"] == "ctr" and sel["coreset"] == "coreset.json"
    sel = {k: json.loads((runs[k].select_dir / "selection.json").read_text())
           for k in runs if runs[k].select_dir is not None}
    # GORACS: deterministic, label-enhanced for CTR, the task's lambda, a POO trace
    assert sel[("goracs", 0)]["indices"] == sel[("goracs", 1)]["indices"]
    assert sel[("goracs", 0)]["params"]["lam"] == 0.5 and "classes" in sel[("goracs", 0)]
    assert sel[("goracs", 0)]["poo"] == pytest.approx(sel[("goracs", 0)]["trace"][-1])
    # random follows the run's seed
    assert sel[("random", 0)]["indices"] != sel[("random", 1)]["indices"]
    assert sel[("random", 1)]["params"]["seed"] == 1


def test_missing_scores_skip_and_present_scores_select(tmp_path: Path):
    cfg, g, arrays, data, records = _setup(tmp_path, ["el2n", "dealrec"], el2n=False)
    runs = {(r.method, r.seed): r for r in g.runs}
    for method in ("el2n", "dealrec"):
        run = runs[(method, 0)]
        with pytest.raises(stages.Skipped, match=r"features/(el2n|influence)\.npy"):
            stages.select(run, cfg.tasks["ctr"].params[method], data, records)
        assert not run.select_dir.exists()
    # once the features stage writes the score, the same run selects by it
    np.save(g.data_dir / "features" / "el2n.npy", arrays["grad_norms"][::-1].copy())
    data = stages.load_selection_data(g.data_dir)
    assert set(data.scores) == {"el2n"}
    run = runs[("el2n", 0)]
    stages.select(run, {}, data, records)
    sel = json.loads((run.select_dir / "selection.json").read_text())
    top = np.argsort(-arrays["grad_norms"][::-1], kind="stable")[:4]
    assert sel["indices"] == sorted(top.tolist())
    assert sel["scores"] == {"el2n": str(g.data_dir / "features" / "el2n.npy")}


def test_flatten_metrics():
    flat = stages.flatten_metrics({"sampled": {"NDCG@10": 0.1, "HR@10": 0.2}, "full": None,
                                   "exact_match": 0.0, "note": "x"})
    assert flat == {"sampled.NDCG@10": 0.1, "sampled.HR@10": 0.2, "full": None,
                    "exact_match": 0.0}


def test_a_restored_selection_rebuilds_its_coreset_from_the_same_pool(tmp_path: Path):
    from goracs.errors import GoracsError

    cfg, g, arrays, data, records = _setup(tmp_path, ["random"], el2n=False)
    run = next(r for r in g.runs if r.method == "random" and r.seed == 0)
    stages.select(run, cfg.tasks["ctr"].params["random"], data, records)
    core_path = run.select_dir / "coreset.json"
    written = json.loads(core_path.read_text())
    # a selection restored without its coreset (as a committed record is): rebuilt the same
    core_path.unlink()
    assert stages.coreset_records(run) == written
    assert json.loads(core_path.read_text()) == written
    # a pool that changed since the selection: refused in one line, nothing written
    core_path.unlink()
    (g.data_dir / "train.json").write_text(json.dumps(records[::-1]))
    with pytest.raises(GoracsError, match="selected from another .*train.json"):
        stages.coreset_records(run)
    assert not core_path.exists()
