"""`goracs features`, `finetune`, `evaluate` and `experiment` under fault, without loading a
model: bad values, places and files give one line and exit 2 before any work, and leave every
user file as it was."""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path

import pytest
from faults_helpers import (
    assert_refused,
    call,
    prepared,
    records,
    snapshot,
    write_json,
)

DEEP = "[" * 100_000 + "]" * 100_000


def _damage(d: Path, name: str, content: str) -> None:
    (d / name).write_text(content)


# -- features ---------------------------------------------------------------------------------

FEATURES_CASES = {
    "features is a file": (lambda d: _damage(d, "features", "user data"), [],
                           r"features: is a file, not a folder"),
    "features holds a user file": (
        lambda d: write_json(d / "features" / "mine.csv", 1), [],
        r"features: is not empty and holds no goracs output"),
    "features.json not valid": (
        lambda d: (write_json(d / "features" / "x.npy", 1),
                   _damage(d / "features", "features.json", "{")), [],
        r"features: its features.json is not a goracs manifest"),
    "deep train.json": (lambda d: _damage(d, "train.json", DEEP), [],
                        r"train\.json: nested 100000 levels deep"),
    "truncated valid.json": (lambda d: _damage(d, "valid.json", '[{"instruction": "a'), [],
                             r"valid\.json: not valid JSON"),
    "deep meta.json": (lambda d: _damage(d, "meta.json", DEEP), [],
                       r"meta\.json: nested 100000 levels deep"),
    "seed -1": (lambda d: None, ["--seed", "-1"],
                r"^goracs features: --seed: must be a non-negative integer"),
    "batch size 0": (lambda d: None, ["--batch-size", "0"],
                     r"^goracs features: --batch-size: must be a positive integer"),
    "threads 0": (lambda d: None, ["--threads", "0"],
                  r"^goracs features: --threads: must be a positive integer"),
}


@pytest.mark.parametrize("name", FEATURES_CASES)
def test_features_faults(tmp_path, capsys, name):
    damage, extra, pattern = FEATURES_CASES[name]
    d = prepared(tmp_path, capsys)
    damage(d)
    before = snapshot(tmp_path)
    code, _, err = call(["features", d, "--quiet", *extra], capsys)
    assert_refused(code, err, pattern)
    assert snapshot(tmp_path) == before


def test_features_on_a_read_only_folder(tmp_path, capsys, monkeypatch):
    d = prepared(tmp_path, capsys)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    code, _, err = call(["features", d, "--quiet"], capsys)
    assert_refused(code, err, r"features: cannot write in .*Read-only file system")


# -- finetune ---------------------------------------------------------------------------------

def _coreset(tmp: Path) -> Path:
    return write_json(tmp / "coreset.json", records(6))


FINETUNE_VALUES = [
    (["--lr", "inf"], r"--lr: must be a finite number"),
    (["--lr", "nan"], r"--lr: must be a finite number"),
    (["--lr", "0"], r"--lr: must be a positive number"),
    (["--weight-decay", "inf"], r"--weight-decay: must be a finite number"),
    (["--weight-decay", "-1"], r"--weight-decay: must be at least 0"),
    (["--max-grad-norm", "0"], r"--max-grad-norm: must be a positive number"),
    (["--lora-dropout", "nan"], r"--lora-dropout: must be a finite number"),
    (["--seed", "-1"], r"--seed: must be a non-negative integer"),
    (["--epochs", "0"], r"--epochs: must be a positive integer"),
    (["--cutoff-len", "1"], r"--cutoff-len: must be an integer of at least 2"),
]


@pytest.mark.parametrize("extra, pattern", FINETUNE_VALUES)
def test_finetune_refuses_meaningless_values(tmp_path, capsys, extra, pattern):
    data = _coreset(tmp_path)
    before = snapshot(tmp_path)
    code, _, err = call(["finetune", "--data", data, "--out", tmp_path / "a", *extra], capsys)
    assert_refused(code, err, "^goracs finetune: " + pattern)
    assert snapshot(tmp_path) == before


def _finetune_places(tmp: Path) -> dict[str, tuple[Path, str]]:
    (tmp / "file").write_text("user data")
    write_json(tmp / "user" / "notes.json", 1)
    bad = tmp / "bad"
    bad.mkdir()
    (bad / "training.json").write_text("{not json")
    deep = tmp / "deep"
    deep.mkdir()
    (deep / "training.json").write_text(DEEP)
    write_json(tmp / "sel" / "selection.json", {"method": "random", "indices": [1]})
    return {
        "existing file": (tmp / "file", "is a file, not a folder"),
        "under a file": (tmp / "file" / "a", "cannot be created"),
        "user folder": (tmp / "user", "is not empty and holds no goracs output"),
        "training.json not valid": (bad, "its training.json is not a goracs manifest "
                                         r"\(not valid JSON"),
        "training.json nested": (deep, "its training.json is not a goracs manifest "
                                       r"\(nested 100000 levels deep"),
        "a selection": (tmp / "sel", r"holds the outputs of `goracs select`"),
        "the input's folder": (tmp, "holds the input"),
    }


def test_finetune_places_are_refused_before_any_work(tmp_path, capsys):
    data = _coreset(tmp_path)
    for name, (out, pattern) in _finetune_places(tmp_path).items():
        before = snapshot(tmp_path)
        code, _, err = call(["finetune", "--data", data, "--out", out], capsys)
        assert_refused(code, err, pattern)
        assert snapshot(tmp_path) == before, name


@pytest.mark.parametrize("content, pattern", [
    (DEEP, "nested 100000 levels deep"),
    ('[{"instruction": "i"', "not valid JSON"),
    ("[]", "no records"),
])
def test_finetune_bad_records(tmp_path, capsys, content, pattern):
    (tmp_path / "c.json").write_text(content)
    code, _, err = call(["finetune", "--data", tmp_path / "c.json", "--out", tmp_path / "a"],
                        capsys)
    assert_refused(code, err, pattern)
    assert not (tmp_path / "a").exists()


# -- evaluate ---------------------------------------------------------------------------------

def test_evaluate_faults(tmp_path, capsys):
    d = prepared(tmp_path, capsys)
    (tmp_path / "file").write_text("user data")
    write_json(tmp_path / "user" / "x.txt", 1)
    cases = {
        "out is a file": (["--out", tmp_path / "file"], "is a file, not a folder"),
        "out under a file": (["--out", tmp_path / "file" / "e"], "cannot be created"),
        "out holds user files": (["--out", tmp_path / "user"], "holds no goracs output"),
        "out is the data": (["--out", d], "holds the input"),
        "seed -1": (["--out", tmp_path / "e", "--seed", "-1"],
                    r"^goracs evaluate: --seed: must be a non-negative integer"),
        "max-test 0": (["--out", tmp_path / "e", "--max-test", "0"],
                       r"^goracs evaluate: --max-test: must be a positive integer"),
    }
    for name, (extra, pattern) in cases.items():
        before = snapshot(tmp_path)
        code, _, err = call(["evaluate", "--data", d, *extra], capsys)
        assert_refused(code, err, pattern)
        assert snapshot(tmp_path) == before, name
    for file, extra in (("meta.json", []), ("test.json", ["--task", "ctr"])):
        (d / file).write_text(DEEP)
        code, _, err = call(["evaluate", "--data", d, "--out", tmp_path / "e", *extra],
                            capsys)
        assert_refused(code, err, f"{file}: nested 100000 levels deep")
        assert not (tmp_path / "e").exists()


# -- experiment -------------------------------------------------------------------------------

CONFIG = """name = "f"
datasets = ["ml-100k"]
tasks = ["ctr"]
methods = ["random"]
seeds = [0]
[task.ctr]
budgets = [4]
metrics = ["AUC"]
"""


@pytest.mark.parametrize("text, pattern", [
    ("a = " + DEEP + "\n", r"nested more than 100 levels deep"),
    (CONFIG.replace("seeds = [0]", "seeds = [-1]"), r"seeds must be 0 or more"),
    (CONFIG + "[task.ctr.prepare]\nseed = -1\n",
     r"task\.ctr\.prepare\.seed: must be a non-negative integer"),
    (CONFIG + "[task.ctr.features]\nseed = -2\n",
     r"task\.ctr\.features\.seed: must be a non-negative integer"),
    (CONFIG + "[task.ctr.train]\nlr = inf\n", r"lr must be a positive finite number"),
    (CONFIG + "[task.ctr.train]\nweight_decay = nan\n", r"weight-decay must be finite"),
    (CONFIG.replace('name = "f"', 'name = "f'), r"not valid TOML"),
])
def test_experiment_configs(tmp_path, capsys, text, pattern):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    code, _, err = call(["experiment", cfg, "--out", tmp_path / "o"], capsys)
    assert_refused(code, err, pattern)
    assert not (tmp_path / "o").exists()


def test_experiment_places(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    (tmp_path / "file").write_text("user data")
    write_json(tmp_path / "user" / "notes.json", 1)
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "config.toml").write_text("[tool.other]\nx = 1\n")
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "config.toml").write_text(CONFIG)
    write_json(ours / "ml-100k-ctr" / "x.json", 1)
    write_json(ours / "mine.txt", 1)
    cases = {
        "a file": (tmp_path / "file", "is a file, not a folder"),
        "under a file": (tmp_path / "file" / "o", "cannot be created"),
        "user folder": (tmp_path / "user", "is not an experiment folder"),
        "another config.toml": (tmp_path / "proj", "its config.toml is not an experiment "
                                                   "config"),
        "a user file in an experiment folder": (ours, "holds mine.txt, which an experiment "
                                                      "does not write"),
        "--only matching nothing": (tmp_path / "new", "matches no run"),
    }
    for name, (out, pattern) in cases.items():
        extra = ["--only", "method=nope"] if name.startswith("--only") else []
        before = snapshot(tmp_path)
        code, _, err = call(["experiment", cfg, "--out", out, *extra], capsys)
        assert_refused(code, err, pattern)
        assert snapshot(tmp_path) == before, name
