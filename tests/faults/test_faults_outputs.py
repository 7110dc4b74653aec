"""The output-place policy (goracs.outputs), command by command the same: checked before any
work, earlier outputs of the same command replaced whole, anything else refused."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import tempfile

import pytest
from faults_helpers import snapshot, write_json

from goracs.errors import GoracsError
from goracs.outputs import KINDS, OutputPlace, foreign_entry, recognise


def selection(folder, budget=3, coreset=True):
    write_json(folder / "selection.json", {"method": "random", "indices": list(range(budget)),
                                           "budget": budget})
    if coreset:
        write_json(folder / "coreset.json", [{"instruction": "i", "input": "", "output": "o"}])
    return folder


def prepared(folder):
    for name in ("train.json", "valid.json"):
        write_json(folder / name, [])
    write_json(folder / "meta.json", {"format": "alpaca", "counts": {}, "task": "ctr"})
    return folder


def test_new_and_empty_folders_are_accepted(tmp_path):
    assert not OutputPlace(tmp_path / "a" / "b", "select").check().replaces
    (tmp_path / "empty").mkdir()
    assert not OutputPlace(tmp_path / "empty", "select").check().replaces


def test_an_earlier_output_of_the_same_command_is_replaced_whole(tmp_path):
    out = selection(tmp_path / "sel", budget=5)
    place = OutputPlace(out, "select").check()
    assert place.replaces
    part = place.begin()
    write_json(part / "selection.json", {"method": "x", "indices": [9]})
    place.commit()
    # the new output alone: the earlier coreset.json went with its folder
    assert sorted(p.name for p in out.iterdir()) == ["selection.json"]
    assert json.loads((out / "selection.json").read_text())["indices"] == [9]
    assert [p.name for p in tmp_path.iterdir()] == ["sel"]


@pytest.mark.parametrize("setup, message", [
    (lambda d: write_json(d / "notes.txt", "mine"),
     "is not empty and holds no goracs output"),
    (lambda d: (selection(d), write_json(d / "notes.txt", "mine")),
     "holds notes.txt, which goracs did not write"),
    (lambda d: prepared(d), r"holds the outputs of `goracs prepare` \(meta.json\)"),
    (lambda d: (d.mkdir(parents=True), (d / "selection.json").write_text("{oops")),
     "its selection.json is not a goracs manifest"),
    (lambda d: write_json(d / "selection.json", {"hello": 1}),
     "its selection.json is not a `goracs select` manifest"),
    (lambda d: (selection(d), (d / "link").symlink_to("/etc")),
     "holds link, which goracs did not write"),
    (lambda d: (selection(d), selection(d / "inner"), write_json(d / "inner" / "x.txt", 1)),
     "holds inner/x.txt, which goracs did not write"),
])
def test_anything_else_is_refused_and_left_alone(tmp_path, setup, message):
    out = tmp_path / "sel"
    setup(out)
    before = snapshot(tmp_path)
    with pytest.raises(GoracsError, match=message):
        OutputPlace(out, "select").check()
    assert snapshot(tmp_path) == before


def test_nested_goracs_outputs_and_leftovers_count_as_ours(tmp_path):
    d = prepared(tmp_path / "d")
    feats = d / "features"
    write_json(feats / "features.json", {"task": "ctr", "n_train": 0, "files": {}})
    (feats / "cache" / "x").mkdir(parents=True)
    selection(d / "goracs-128")
    (d / ".goracs-128.goracs-partial").mkdir()
    (d / ".train.json.goracs-abc.tmp").write_text("")
    (d / ".adapter.checkpoints").mkdir()
    assert recognise(d)[0] is KINDS["prepare"]
    assert foreign_entry(d, KINDS["prepare"]) is None
    write_json(d / "goracs-128" / "mine.csv", 1)
    assert foreign_entry(d, KINDS["prepare"]) == "goracs-128/mine.csv"


@pytest.mark.parametrize("where, message", [
    (lambda t: t / "file" / "out", "cannot be created: .*file is a file"),
    (lambda t: t / "file", "is a file, not a folder"),
    (lambda t: t / "in", "holds the input"),
    (lambda t: t, "holds the input"),
    (lambda t: t / "link", "is a symbolic link"),
])
def test_places_that_cannot_hold_outputs(tmp_path, where, message):
    (tmp_path / "file").write_text("user data")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.npy").write_text("input")
    (tmp_path / "link").symlink_to(tmp_path / "in")
    before = snapshot(tmp_path)
    with pytest.raises(GoracsError, match=message):
        OutputPlace(where(tmp_path), "select", inputs=[tmp_path / "in" / "x.npy"]).check()
    assert snapshot(tmp_path) == before


def test_the_current_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GoracsError, match="is the current folder"):
        OutputPlace(".", "select").check()
    with pytest.raises(GoracsError, match="is the current folder"):
        OutputPlace("..", "select").check()


def test_a_read_only_place_is_refused_before_any_work(tmp_path, monkeypatch):
    """Read-only simulated: the probe folder cannot be created (EROFS), as on a read-only
    mount (the tests run as root, whom permission bits do not stop)."""
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    with pytest.raises(GoracsError, match=r"cannot write in .* \(Read-only file system\)"):
        OutputPlace(tmp_path / "out", "select").check()


def test_an_immutable_folder_is_refused(tmp_path):
    """A real unwritable folder where the system allows it: chattr +i stops root too."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        with pytest.raises(GoracsError, match="cannot write in"):
            OutputPlace(ro / "out", "select").check()
    finally:
        subprocess.run(["chattr", "-i", str(ro)], check=True)


def test_a_run_that_fails_leaves_the_earlier_output(tmp_path):
    out = selection(tmp_path / "sel")
    before = snapshot(tmp_path)
    place = OutputPlace(out, "select").check()
    part = place.begin()
    write_json(part / "coreset.json", [])
    place.discard()  # the run failed before its manifest
    assert snapshot(tmp_path) == before


def test_commit_rechecks_the_folder_it_replaces(tmp_path):
    out = selection(tmp_path / "sel")
    place = OutputPlace(out, "select").check()
    part = place.begin()
    write_json(part / "selection.json", {"method": "x", "indices": []})
    write_json(out / "added-meanwhile.txt", "mine")
    with pytest.raises(GoracsError, match="changed while this run worked"):
        place.commit()
    assert (out / "added-meanwhile.txt").is_file() and (out / "coreset.json").is_file()


def test_begin_keeps_only_the_named_work(tmp_path):
    place = OutputPlace(tmp_path / "ev", "evaluate").check()
    part = place.begin()
    (part / ".work-abc").mkdir()
    (part / ".work-abc" / "chunk").write_text("kept")
    (part / "metrics.json").write_text("stale")
    (part / ".work-old").mkdir()
    part = place.begin(keep={".work-abc"})
    assert sorted(os.listdir(part)) == [".work-abc"]
