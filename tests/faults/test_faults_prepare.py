"""`goracs prepare` under fault: the user's files are never deleted, an earlier prepared folder
is replaced whole (its stale features with it), bad files and values give one line."""

from __future__ import annotations

import json
import signal

import pytest
from faults_helpers import (
    assert_refused,
    call,
    records,
    run_cli,
    snapshot,
    write_json,
)

from goracs.outputs import FAULT_POINTS

DEEP = "[" * 100_000 + "]" * 100_000


def _user_folder(tmp):
    """A folder of the user's own files: records, a test split and a catalogue."""
    d = tmp / "d"
    write_json(d / "train.json", records(20))
    write_json(d / "valid.json", records(5, start=100))
    write_json(d / "test.json", records(5, start=200))
    write_json(d / "items.json", ["Film 1 (1990)", "Film 2 (1991)"])
    return d


def test_preparing_into_the_folder_of_the_inputs_deletes_nothing(tmp_path, capsys):
    """The repro: --out d with --train d/train.json deleted d/test.json and d/items.json."""
    d = _user_folder(tmp_path)
    before = snapshot(tmp_path)
    code, _, err = call(["prepare", "--dataset", "json", "--train", d / "train.json",
                         "--valid", d / "valid.json", "--out", d], capsys)
    assert_refused(code, err, r"--out .*d: holds the input .*train\.json")
    assert snapshot(tmp_path) == before


def test_a_folder_of_user_files_is_refused_whole(tmp_path, capsys):
    d = _user_folder(tmp_path)
    src = tmp_path / "src"
    write_json(src / "train.json", records(8))
    write_json(src / "valid.json", records(4, start=50))
    before = snapshot(tmp_path)
    code, _, err = call(["prepare", "--dataset", "json", "--train", src / "train.json",
                         "--valid", src / "valid.json", "--out", d], capsys)
    assert_refused(code, err, "is not empty and holds no goracs output")
    assert snapshot(tmp_path) == before


def test_a_rerun_replaces_the_folder_and_its_stale_features(tmp_path, capsys):
    src = tmp_path / "src"
    write_json(src / "train.json", records(8))
    write_json(src / "valid.json", records(4, start=50))
    write_json(src / "test.json", records(4, start=90))
    out = tmp_path / "p"
    argv = ["prepare", "--dataset", "json", "--task", "ctr", "--train", src / "train.json",
            "--valid", src / "valid.json", "--out", out]
    assert call(argv + ["--test", src / "test.json"], capsys)[0] == 0
    write_json(out / "features" / "features.json", {"task": "ctr", "n_train": 8, "files": {}})
    write_json(out / "sel" / "selection.json", {"method": "random", "indices": [0]})
    write_json(src / "train.json", records(9, start=1))
    assert call(argv, capsys)[0] == 0
    # features/ and the selection were derived from the old records: gone with them
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train.json", "valid.json"]
    assert json.loads((out / "train.json").read_text()) == records(9, start=1)
    assert not [p for p in tmp_path.iterdir() if ".goracs-" in p.name]


def test_a_folder_with_a_user_file_beside_goracs_outputs_is_refused(tmp_path, capsys):
    src = tmp_path / "src"
    write_json(src / "train.json", records(8))
    write_json(src / "valid.json", records(4, start=50))
    out = tmp_path / "p"
    argv = ["prepare", "--dataset", "json", "--train", src / "train.json", "--valid",
            src / "valid.json", "--out", out]
    assert call(argv, capsys)[0] == 0
    write_json(out / "features" / "features.json", {"task": "ctr", "n_train": 8, "files": {}})
    write_json(out / "features" / "my-notes.json", {"mine": 1})
    before = snapshot(tmp_path)
    code, _, err = call(argv, capsys)
    assert_refused(code, err, "holds features/my-notes.json, which goracs did not write")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("content, pattern", [
    (DEEP, "nested 100000 levels deep; at most 100 are read"),
    ('[{"instruction": "i", "input": "", "outp', "not (valid )?JSON"),
    ("", "not (valid )?JSON|no records"),
    ('{"a": 1}\n' + DEEP, "nested 100000 levels deep"),
])
def test_bad_record_files_give_one_line(tmp_path, capsys, content, pattern):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    good = write_json(tmp_path / "valid.json", records(3))
    for flag in ("--train", "--valid", "--test", "--items"):
        files = {"--train": good, "--valid": good}
        files[flag] = bad
        argv = ["prepare", "--dataset", "json", "--out", tmp_path / "out"]
        for k, v in files.items():
            argv += [k, v]
        before = snapshot(tmp_path)
        code, _, err = call(argv, capsys)
        assert_refused(code, err, pattern)
        assert snapshot(tmp_path) == before


@pytest.mark.parametrize("extra, pattern", [
    (["--like-threshold", "nan"], r"^goracs prepare: --like-threshold: must be a finite"),
    (["--seed", "-1"], r"^goracs prepare: --seed: must be a non-negative integer"),
    (["--negatives", "0"], r"^goracs prepare: --negatives: must be at least 1"),
])
def test_bad_values_are_refused_by_the_parser(tmp_path, capsys, extra, pattern):
    code, _, err = call(["prepare", "--dataset", "ml-100k", "--task", "ctr", "--out",
                         tmp_path / "o", *extra], capsys)
    assert_refused(code, err, pattern)
    assert list(tmp_path.iterdir()) == []


def test_ctr_records_must_answer_yes_or_no(tmp_path, capsys):
    train = write_json(tmp_path / "t.json", records(4) + [{"instruction": "i", "input": "",
                                                            "output": "Maybe"}])
    code, _, err = call(["prepare", "--dataset", "json", "--task", "ctr", "--train", train,
                         "--valid", train, "--out", tmp_path / "o"], capsys)
    assert_refused(code, err, "train record 4: a ctr output must be Yes or No")


def test_places_are_checked_before_reading_anything(tmp_path, capsys):
    (tmp_path / "f").write_text("user data")
    code, _, err = call(["prepare", "--dataset", "json", "--train", tmp_path / "missing.json",
                         "--valid", tmp_path / "missing.json", "--out", tmp_path / "f" / "o"],
                        capsys)
    assert_refused(code, err, "cannot be created: .*f is a file")


@pytest.mark.parametrize("point", FAULT_POINTS)
def test_kill_on_the_write_path_then_rerun(tmp_path, point):
    """A prepare killed anywhere on its write path, rerun: the same bytes as one run."""
    src = tmp_path / "src"
    write_json(src / "train.json", records(12))
    write_json(src / "valid.json", records(4, start=50))
    argv = ["prepare", "--dataset", "json", "--task", "ctr", "--train", src / "train.json",
            "--valid", src / "valid.json"]
    assert run_cli(argv + ["--out", tmp_path / "ref"], tmp_path).returncode == 0
    out = tmp_path / "p"
    write_json(src / "old.json", records(3, start=500))
    assert run_cli(["prepare", "--dataset", "json", "--train", src / "old.json", "--valid",
                    src / "old.json", "--out", out], tmp_path).returncode == 0
    killed = run_cli(argv + ["--out", out], tmp_path, GORACS_FAULT=point)
    assert killed.returncode == -signal.SIGKILL
    assert run_cli(argv + ["--out", out], tmp_path).returncode == 0
    got, want = snapshot(out), snapshot(tmp_path / "ref")
    meta = lambda d: {k: v for k, v in json.loads((d / "meta.json").read_text()).items()  # noqa: E731
                      if k != "source"}
    assert meta(out) == meta(tmp_path / "ref")
    assert {k: v for k, v in got.items() if k != "meta.json"} == \
        {k: v for k, v in want.items() if k != "meta.json"}
    assert not [p for p in tmp_path.iterdir() if ".goracs-" in p.name]
