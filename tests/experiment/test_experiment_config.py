"""Experiment configs: the shipped ones load, and every kind of bad input is one line naming
the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from goracs.errors import GoracsError
from goracs.experiment import SHIPPED, load_config, parse_config
from goracs.experiment.config_files import shipped_config_path
from goracs.select import available_methods


def minimal() -> dict:
    """The smallest valid document, as tomllib would return it."""
    return {
        "datasets": ["ml-1m"],
        "tasks": ["ctr"],
        "methods": ["random", "goracs", "stratified"],
        "seeds": [0, 1],
        "task": {"ctr": {"budgets": [4, 8], "metrics": ["AUC"],
                         "prepare": {"max_train": 24, "valid_size": 8, "test_size": 8}}},
    }


def test_minimal_config_resolves_defaults():
    cfg = parse_config(minimal(), "mini")
    assert cfg.name == "mini" and cfg.zero_shot and not cfg.full_data
    tc = cfg.tasks["ctr"]
    assert tc.budgets == (4, 8) and tc.preset == "cpu-small" and tc.use_valid
    # GORACS gets the reference's CTR lambda; random takes no parameter
    assert tc.params == {"random": {}, "goracs": {"lam": 0.5}, "stratified": {}}
    assert tc.train.seed == 0 and tc.evaluate.max_test is None


def test_overrides_and_none_values():
    doc = minimal()
    doc["params"] = {"goracs": {"max_iters": "none", "candidates": 5}}
    doc["task"]["ctr"]["params"] = {"goracs": {"lam": 0.2}}
    doc["task"]["ctr"]["train"] = {"preset": "paper", "epochs": 3, "early_stopping": "none",
                                   "target_modules": ["q_proj"]}
    doc["task"]["ctr"]["evaluate"] = {"max_test": "all", "batch_size": 4}
    tc = parse_config(doc, "x").tasks["ctr"]
    assert tc.params["goracs"] == {"lam": 0.2, "max_iters": None, "candidates": 5}
    assert tc.train.epochs == 3 and tc.train.lr == 1e-4 and tc.train.early_stopping is None
    assert tc.train.target_modules == ("q_proj",)
    assert tc.evaluate.max_test is None and tc.evaluate.batch_size == 4


def _set(doc: dict, path: str, value) -> dict:
    *head, last = path.split(".")
    t = doc
    for k in head:
        t = t.setdefault(k, {})
    t[last] = value
    return doc


@pytest.mark.parametrize("path,value,expect", [
    ("colour", "blue", r"^colour: unknown key"),
    ("task.ctr.train.epoch", 3, r"^task\.ctr\.train\.epoch: unknown key"),
    ("task.ctr.prepare.max_trian", 3, r"^task\.ctr\.prepare\.max_trian: unknown key"),
    ("methods", ["random", "magic"], r"^methods: unknown method 'magic'"),
    ("task.ctr.budgets", [0, 4], r"^task\.ctr\.budgets: budgets must be positive, got 0"),
    ("task.ctr.budgets", [-3], r"^task\.ctr\.budgets: budgets must be positive"),
    ("task.ctr.budgets", [24], r"^task\.ctr\.budgets: budget 24 is not below the training "
                               r"pool \(task\.ctr\.prepare\.max_train = 24\)"),
    ("task.ctr.budgets", [], r"^task\.ctr\.budgets: expected a non-empty list"),
    ("task.ctr.metrics", ["NDCG@10"], r"^task\.ctr\.metrics: unknown ctr metric 'NDCG@10'"),
    ("task.ctr.train.lr", "fast", r"^task\.ctr\.train\.lr: expected a number, got a string"),
    ("task.ctr.train.lr", -1.0, r"^task\.ctr\.train: lr must be a positive"),
    ("task.ctr.train.seed", 3, r"^task\.ctr\.train\.seed: the fine-tuning seed"),
    ("task.ctr.train.preset", "huge", r"^task\.ctr\.train\.preset: unknown preset"),
    ("task.ctr.evaluate.max_test", 0, r"^task\.ctr\.evaluate: max-test must be at least 1"),
    ("task.ctr.features.batch_size", 0, r"^task\.ctr\.features\.batch_size: must be a "
                                        r"positive integer"),
    ("params.goracs.lamda", 0.1, r"^params\.goracs\.lamda: method 'goracs' has no "
                                 r"parameter 'lamda'"),
    ("params.stratified.n_clusters", 0, r"^params\.stratified: n_clusters must be an "
                                        r"integer >= 1"),
    ("task.ctr.params.magic.x", 1, r"^task\.ctr\.params\.magic: unknown method"),
    ("params.goracs.per_class", 3, r"^params\.goracs: per-class must be true or false"),
    ("task.ctr.params.goracs.lam", -0.5, r"^task\.ctr\.params\.goracs: lambda must be"),
    ("params.goracs.candidates", 0, r"^params\.goracs: candidates must be an integer >= 1"),
    ("datasets", ["netflix"], r"^datasets: unknown dataset 'netflix'"),
    ("tasks", ["ctr", "seqrec"], r"^task\.seqrec: missing"),
    ("seeds", [0, 0], r"^seeds: values repeat"),
    ("zero_shot", "yes", r"^zero_shot: expected true or false"),
    ("device", "tpu", r"^device: must be one of"),
    ("data.ml-1m.colour", "x", r"^data\.ml-1m\.colour: unknown key"),
    ("data.amazon.path", "x", r"^data\.amazon: unknown key"),
])
def test_bad_config_names_the_key(path, value, expect):
    with pytest.raises(GoracsError, match=expect) as info:
        parse_config(_set(minimal(), path, value), "x")
    assert "\n" not in str(info.value)


def test_shipped_configs_load_and_paper_runs_every_selector():
    assert set(SHIPPED) == {"cpu", "paper", "evidence", "evidence-gpu"}
    for name in SHIPPED:
        assert shipped_config_path(name).is_file()
        cfg = load_config(name)
        assert cfg.name == name and cfg.source == name
    paper = load_config("paper")
    assert set(paper.methods) == set(available_methods())
    assert paper.tasks["seqrec"].budgets == (1024,) and paper.tasks["ctr"].budgets == (64,)
    assert paper.tasks["seqrec"].preset == paper.tasks["ctr"].preset == "paper"
    assert paper.datasets == ("ml-1m",) and paper.full_data
    cpu = load_config("cpu")
    assert cpu.model == "smollm2-135m-instruct" and len(cpu.seeds) >= 2 and cpu.zero_shot
    assert {"random", "kcenter", "herding", "stratified", "grand", "el2n", "ccs",
            "d2pruning", "dealrec", "goracs"} <= set(cpu.methods)


def test_config_files_from_paths(tmp_path: Path):
    p = tmp_path / "mine.toml"
    p.write_text('datasets = ["ml-1m"]\ntasks = ["ctr"]\nmethods = ["random"]\nseeds = [0]\n'
                 '[task.ctr]\nbudgets = [2]\nmetrics = ["AUC"]\n'
                 '[task.ctr.prepare]\nmax_train = 10\n')
    cfg = load_config(str(p))
    assert cfg.name == "mine" and cfg.source == str(p) and cfg.text == p.read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text("datasets = [\n")
    with pytest.raises(GoracsError, match=r"^.*bad\.toml: not valid TOML"):
        load_config(str(bad))
    with pytest.raises(GoracsError, match="no config file 'nope'.*cpu, paper"):
        load_config("nope")


def test_cli_reports_a_bad_config_in_one_line(tmp_path: Path):
    p = tmp_path / "bad.toml"
    p.write_text('datasets = ["ml-1m"]\ntasks = ["ctr"]\nmethods = ["random"]\nseeds = [0]\n'
                 '[task.ctr]\nbudgets = [50]\nmetrics = ["AUC"]\n'
                 '[task.ctr.prepare]\nmax_train = 10\n')
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "goracs.cli", "experiment", str(p), "--out",
                          str(out)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "goracs: error: bad.toml: task.ctr.budgets: budget 50 is not below the training pool "
        "(task.ctr.prepare.max_train = 10)"]
    assert not out.exists()


def test_dry_run_of_a_shipped_config_lists_its_plan(tmp_path: Path, capsys):
    from goracs.cli import main

    out = tmp_path / "never"
    assert main(["experiment", "paper", "--dry-run", "--out", str(out),
                 "--only", "task=ctr,method=goracs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"experiment paper (paper) -> {out}"
    seeds = len(load_config("paper").seeds)
    assert lines[-1] == f"{2 + 3 * seeds} units: 0 cached, {2 + 3 * seeds} to compute"
    assert all(" goracs " in line for line in lines[3:-1])
    assert not out.exists()
    assert main(["experiment", "paper", "--dry-run", "--only", "colour=red"]) == 2
    assert capsys.readouterr().err.startswith("goracs: error: --only: unknown key 'colour'")


def test_variants_seeds_and_task_methods():
    from goracs.experiment.plan import build_plan

    doc = minimal()
    doc["methods"] = ["random", "goracs", "goracs-pooled", "goracs-llm"]
    doc["seeds"] = [0, 1, 2]
    doc["variants"] = {"goracs-pooled": {"method": "goracs"},
                       "goracs-llm": {"method": "goracs", "embedding": "llm"}}
    doc["params"] = {"goracs-pooled": {"per_class": False}}
    doc["method_seeds"] = {"goracs-llm": [0]}
    doc["task"]["ctr"]["features"] = {"embedding": "both"}
    doc["task"]["ctr"]["prepare"]["split"] = "user-time"
    cfg = parse_config(doc, "v")
    tc = cfg.tasks["ctr"]
    assert cfg.base_method("goracs-pooled") == "goracs" and cfg.base_method("random") == "random"
    assert cfg.embedding("goracs-llm") == "llm" and cfg.embedding("goracs-pooled") == "default"
    # a variant gets its base method's task lambda, then its own parameters
    assert tc.params["goracs-pooled"] == {"lam": 0.5, "per_class": False}
    assert tc.seeds == {"random": (0, 1, 2), "goracs": (0, 1, 2), "goracs-pooled": (0, 1, 2),
                        "goracs-llm": (0,)}
    assert tc.prepare.split == "user-time"
    runs = build_plan(cfg, Path("/tmp/x"))[0].runs
    labels = [(r.method, r.seed) for r in runs if r.budget == 4]
    assert labels.count(("goracs-llm", 0)) == 1 and ("goracs-llm", 1) not in labels
    # a variant's coreset is its own folder, apart from its base method's
    sel = {(r.method, r.seed): r.select_dir for r in runs if r.budget == 4}
    assert sel[("goracs-pooled", 0)] != sel[("goracs", 0)]

    # per-task methods and seeds
    doc2 = minimal()
    doc2["task"]["ctr"]["methods"] = ["random"]
    doc2["task"]["ctr"]["seeds"] = [5]
    tc2 = parse_config(doc2, "t").tasks["ctr"]
    assert tc2.methods == ("random",) and tc2.seeds == {"random": (5,)}


@pytest.mark.parametrize("change, expect", [
    ({"variants": {"goracs": {"method": "goracs"}}}, r"^variants\.goracs: 'goracs' is a method"),
    ({"variants": {"g2": {"method": "nope"}}}, r"^variants\.g2\.method: expected a method"),
    ({"variants": {"g2": {"method": "goracs", "embedding": "tfidf"}}},
     r"^variants\.g2\.embedding: must be one of"),
    ({"variants": {"g2": {"method": "goracs", "colour": 1}}}, r"^variants\.g2\.colour: unknown"),
    ({"variants": {"g2": {"method": "goracs"}}}, r"^variants\.g2: defined but not listed"),
    ({"methods": ["random", "g2"], "variants": {"g2": {"method": "goracs", "embedding": "llm"}}},
     r"^variants\.g2: selects on the LLM's embeddings"),
    ({"methods": ["random", "g2"], "variants": {"g2": {"method": "goracs"}},
      "params": {"g2": {"colour": 1}}}, r"^params\.g2\.colour: method 'g2' has no parameter"),
    ({"method_seeds": {"kcenter": [0]}}, r"^method_seeds\.kcenter: not listed"),
    ({"method_seeds": {"random": [-1]}}, r"^method_seeds\.random: seeds must be 0 or more"),
    ({"seeds": [-1]}, r"^seeds: seeds must be 0 or more"),
])
def test_bad_variants_and_seeds_name_the_key(change, expect):
    doc = minimal()
    doc.update(change)
    with pytest.raises(GoracsError, match=expect) as info:
        parse_config(doc, "x")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("path, value, expect", [
    ("task.ctr.prepare.split", "random", r"^task\.ctr\.prepare\.split: must be one of"),
    ("task.ctr.prepare.negative_sampling", "pop",
     r"^task\.ctr\.prepare\.negative_sampling: must be one of"),
    ("task.ctr.features.grad_loss", "prompt", r"^task\.ctr\.features\.grad_loss: must be one"),
    ("task.ctr.features.embedding", "tfidf", r"^task\.ctr\.features\.embedding: must be one"),
    ("task.ctr.methods", ["kcenter"], r"^task\.ctr\.methods: 'kcenter' is not in"),
])
def test_bad_task_keys_name_the_key(path, value, expect):
    with pytest.raises(GoracsError, match=expect):
        parse_config(_set(minimal(), path, value), "x")


def test_the_features_key_follows_the_resolved_gradient_loss():
    from goracs.experiment.plan import build_plan

    def feat_key(features: dict, task: str = "ctr") -> str:
        doc = minimal()
        doc["tasks"] = [task]
        doc["task"] = {task: {**doc["task"]["ctr"], "features": features,
                              "metrics": ["AUC"] if task == "ctr" else ["sampled.HR@10"]}}
        return build_plan(parse_config(doc, "k"), Path("/tmp/x"))[0].keys["features"]

    # CTR's default is the answer-only loss: asking for it by name is the same folder,
    # asking for the whole text another; SeqRec's default is the whole text
    assert feat_key({}) == feat_key({"grad_loss": "response"})
    assert feat_key({}) != feat_key({"grad_loss": "text"})
    assert feat_key({}, "seqrec") == feat_key({"grad_loss": "text"}, "seqrec")
