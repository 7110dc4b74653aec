"""`goracs select` under fault: bad inputs and output places give one line and exit 2 with
every user file untouched; stale outputs never survive beside new ones; a kill -9 at any point
followed by a rerun gives the indices and POO of an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from faults_helpers import (
    arrays,
    assert_refused,
    call,
    command,
    env,
    fake_features,
    prepared,
    run_cli,
    select_args,
    snapshot,
    write_json,
)

from goracs.outputs import FAULT_POINTS


def _swap(args: list, flag: str, value) -> list:
    args = list(args)
    args[args.index(flag) + 1] = value
    return args


def _bad_inputs(tmp: Path, a: dict[str, Path]) -> dict[str, tuple[list, str]]:
    """name -> (argv, pattern of the one line)."""
    def npy(name, arr):
        np.save(tmp / name, arr)
        return tmp / name

    truncated = tmp / "truncated.npy"
    truncated.write_bytes(a["train"].read_bytes()[:100])
    out = tmp / "out"
    base = select_args(a, out)
    return {
        "0-d grad norms": (_swap(base, "--grad-norms", npy("g0.npy", np.float32(2))),
                           r"--grad-norms: must be a 1-D array, got shape \(\)"),
        "0-d labels": (base + ["--train-labels", npy("l0.npy", np.int64(1)),
                               "--valid-labels", a["vl"]],
                       r"--train-labels: must be a 1-D array, got shape \(\)"),
        "2-D grad norms": (_swap(base, "--grad-norms", npy("g2.npy", np.ones((120, 2)))),
                           "--grad-norms: must be a 1-D array"),
        "1-D embeddings": (_swap(base, "--train-emb", npy("e1.npy", np.ones(120))),
                           "--train-emb: must be a 2-D array"),
        "complex embeddings": (_swap(base, "--train-emb",
                                     npy("ec.npy", np.ones((120, 8), complex))),
                               "--train-emb: must hold real numbers, got complex"),
        "text labels": (base + ["--train-labels", npy("lt.npy", np.array(["a"] * 120)),
                                "--valid-labels", a["vl"]],
                        "--train-labels: must hold real numbers, got text"),
        "fractional labels": (base + ["--train-labels", npy("lf.npy", np.full(120, 0.5)),
                                      "--valid-labels", a["vl"]],
                              "--train-labels: must hold whole numbers"),
        "float32 overflow": (_swap(base, "--train-emb", npy("big.npy", np.full((120, 8), 1e300))),
                             "--train-emb: contains NaN or inf once cast to float32"),
        "negative grad norms": (_swap(base, "--grad-norms", npy("gn.npy", -np.ones(120))),
                                "--grad-norms: must be non-negative"),
        "truncated npy": (_swap(base, "--train-emb", truncated), "cannot read"),
        "seed -1": (base + ["--method", "random", "--seed", "-1"],
                    r"^goracs select: --seed: must be a non-negative integer"),
        "seed -1 goracs": (base + ["--seed", "-1"], r"--seed: must be a non-negative"),
        "budget 0": (_swap(base, "--budget", "0"),
                     r"^goracs select: --budget: must be a positive integer"),
        "lam nan": (_swap(base, "--lam", "nan"), r"--lam: must be a finite number"),
        "lam negative": (_swap(base, "--lam", "-1"), r"--lam: must be at least 0"),
        "tol inf": (base + ["--tol", "inf"], r"--tol: must be a finite number"),
        "candidates 0": (_swap(base, "--candidates", "0"), r"--candidates: must be a positive"),
        "deep --param": (base + ["--method", "stratified", "--param",
                                 "n_clusters=" + "[" * 300 + "]" * 300],
                         "--param n_clusters: nested 300 levels deep"),
        "labels without valid labels": (base + ["--train-labels", a["tl"]],
                                        "give both train-labels and valid-labels"),
        "task without data": (base + ["--task", "ctr"], "--task goes with --data"),
    }


def test_bad_inputs_give_one_line_and_touch_nothing(tmp_path, capsys):
    a = arrays(tmp_path / "in")
    for name, (argv, pattern) in _bad_inputs(tmp_path, a).items():
        before = snapshot(tmp_path)
        code, out, err = call(argv, capsys)
        assert_refused(code, err, pattern)
        assert snapshot(tmp_path) == before, name
        assert not (tmp_path / "out").exists(), name


def _places(tmp: Path, a: dict[str, Path]) -> dict[str, tuple[Path, str]]:
    """name -> (--out, pattern): places select must refuse before any work."""
    (tmp / "a-file").write_text("user data")
    user = tmp / "user-folder"
    write_json(user / "notes.json", {"mine": True})
    other = tmp / "prepared"
    write_json(other / "meta.json", {"format": "alpaca", "counts": {}})
    write_json(other / "train.json", [])
    bad_manifest = tmp / "bad-manifest"
    bad_manifest.mkdir()
    (bad_manifest / "selection.json").write_text("[" * 100_000)
    return {
        "existing file": (tmp / "a-file", "is a file, not a folder"),
        "under a file": (tmp / "a-file" / "sel", "cannot be created: .*a-file is a file"),
        "input folder": (a["train"].parent, "holds the input"),
        "user folder": (user, "is not empty and holds no goracs output"),
        "another command's output": (other, "holds the outputs of `goracs prepare`"),
        "nested manifest": (bad_manifest, "its selection.json is not a goracs manifest"),
    }


def test_bad_places_are_refused_before_any_work(tmp_path, capsys):
    a = arrays(tmp_path / "in")
    for name, (out, pattern) in _places(tmp_path, a).items():
        before = snapshot(tmp_path)
        code, _, err = call(select_args(a, out), capsys)
        assert_refused(code, err, pattern)
        assert snapshot(tmp_path) == before, name


def test_a_read_only_place_is_refused_before_the_selection(tmp_path, capsys, monkeypatch):
    """Simulated by a probe that fails with EROFS; the selection must never start."""
    import errno
    import tempfile

    from goracs.select import goracs as engine

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    def never(*args, **kwargs):
        raise AssertionError("the selection ran")

    a = arrays(tmp_path / "in")
    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    monkeypatch.setattr(engine.GORACS, "_select", never)
    code, _, err = call(select_args(a, tmp_path / "ro" / "sel"), capsys)
    assert_refused(code, err, r"cannot write in .*Read-only file system")


def test_a_later_selection_replaces_the_earlier_whole(tmp_path, capsys):
    """`select --data X --out S`, then `select --train-emb ... --out S`: no coreset.json of
    the first may stay beside the second's selection.json."""
    d = prepared(tmp_path, capsys)
    fake_features(d)
    out = tmp_path / "S"
    assert call(["select", "--data", d, "--budget", "6", "--out", out], capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["coreset.json", "selection.json"]
    a = arrays(tmp_path / "in")
    assert call(select_args(a, out, budget=7), capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["selection.json"]
    assert json.loads((out / "selection.json").read_text())["budget"] == 7
    assert not [p for p in tmp_path.iterdir() if ".goracs-" in p.name]


def test_data_checks_task_and_digest_not_row_counts(tmp_path, capsys):
    d = prepared(tmp_path, capsys)
    fake_features(d, task="seqrec")  # SeqRec features of CTR samples: same row counts
    code, _, err = call(["select", "--data", d, "--budget", "5", "--out", tmp_path / "s"],
                        capsys)
    assert_refused(code, err, "features were computed for the seqrec task, not ctr")
    fake_features(d, task="ctr")
    train = json.loads((d / "train.json").read_text())
    train[0]["output"] = "No" if train[0]["output"] == "Yes" else "Yes"  # same rows, new data
    (d / "train.json").write_text(json.dumps(train))
    code, _, err = call(["select", "--data", d, "--budget", "5", "--out", tmp_path / "s"],
                        capsys)
    assert_refused(code, err, r"train\.json changed since its features were computed")
    fake_features(d)
    manifest = json.loads((d / "features" / "features.json").read_text())
    del manifest["digests"]
    write_json(d / "features" / "features.json", manifest)
    code, _, err = call(["select", "--data", d, "--budget", "5", "--out", tmp_path / "s"],
                        capsys)
    assert_refused(code, err, "records no digest")
    assert not (tmp_path / "s").exists()


def test_a_json_folder_gets_its_task(tmp_path, capsys):
    """`prepare --dataset json` without --task: select says to give it, and can; with
    --task, the folder records it."""
    d = prepared(tmp_path, capsys, name="notask", task=None)
    fake_features(d, task="ctr")
    code, _, err = call(["select", "--data", d, "--budget", "5", "--out", tmp_path / "s"],
                        capsys)
    assert_refused(code, err, "task must be one of seqrec, ctr, got None")
    assert call(["select", "--data", d, "--task", "ctr", "--budget", "5", "--out",
                 tmp_path / "s"], capsys)[0] == 0
    code, _, err = call(["select", "--data", d, "--task", "seqrec", "--budget", "5", "--out",
                         tmp_path / "s2"], capsys)
    assert_refused(code, err, "computed for the ctr task, not seqrec")
    d2 = prepared(tmp_path, capsys, name="withtask", task="ctr")
    assert json.loads((d2 / "meta.json").read_text())["task"] == "ctr"
    fake_features(d2)
    assert call(["select", "--data", d2, "--budget", "5", "--out", tmp_path / "s3"],
                capsys)[0] == 0
    code, _, err = call(["select", "--data", d2, "--task", "seqrec", "--budget", "5",
                         "--out", tmp_path / "s4"], capsys)
    assert_refused(code, err, "meta.json names the ctr task")


# -- kill -9 and rerun ------------------------------------------------------------------------

def _result(out: Path) -> tuple[list[int], float]:
    sel = json.loads((out / "selection.json").read_text())
    return sel["indices"], sel["poo"]


def _kill_args(a: dict[str, Path], out: Path) -> list:
    return select_args(a, out, budget=40) + ["--max-iters", "30"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Inputs large enough for the selection to take about a second, and the result of an
    uninterrupted run on them."""
    tmp = tmp_path_factory.mktemp("kill")
    a = arrays(tmp / "in", n=400, v=100)
    t0 = time.perf_counter()
    proc = run_cli(_kill_args(a, tmp / "ref"), tmp)
    assert proc.returncode == 0, proc.stderr
    return tmp, a, _result(tmp / "ref"), time.perf_counter() - t0


def _assert_clean_result(out: Path, want: tuple[list[int], float]) -> None:
    assert _result(out) == want
    assert sorted(p.name for p in out.iterdir()) == ["selection.json"]
    assert not [p.name for p in out.parent.iterdir() if ".goracs-" in p.name]


def test_kill_at_random_times_then_rerun_gives_the_same_selection(reference):
    tmp, a, want, seconds = reference
    rng = np.random.default_rng(16)
    for k, delay in enumerate(rng.uniform(0.2, seconds, size=3)):
        out = tmp / f"killed-{k}"
        proc = subprocess.Popen(command(_kill_args(a, out)), cwd=tmp, env=env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (out / "selection.json").exists():  # finished before the kill: complete
            assert _result(out) == want
        rerun = run_cli(_kill_args(a, out), tmp)
        assert rerun.returncode == 0, rerun.stderr
        _assert_clean_result(out, want)


@pytest.mark.parametrize("point", FAULT_POINTS)
def test_kill_on_the_write_path_then_rerun(tmp_path, point):
    """Killed at each point of the write path (goracs.outputs.FAULT_POINTS) while replacing
    an earlier selection: the folder holds the earlier selection, the new one, or (between
    the two renames) nothing, never a mix; the rerun gives the uninterrupted result. The
    write path is every method's; k-center keeps these runs short."""
    a = arrays(tmp_path / "in")
    args = select_args(a, tmp_path / "ref") + ["--method", "kcenter", "--seed", "3"]
    assert run_cli(args, tmp_path).returncode == 0
    want = _result(tmp_path / "ref")
    out = tmp_path / "sel"
    args = _swap(args, "--out", out)
    earlier = run_cli(_swap(args, "--budget", "12"), tmp_path)
    assert earlier.returncode == 0, earlier.stderr
    old = _result(out)
    killed = run_cli(args, tmp_path, GORACS_FAULT=point)
    assert killed.returncode == -signal.SIGKILL
    if out.exists():
        assert _result(out) in (old, want)
        assert sorted(p.name for p in out.iterdir()) == ["selection.json"]
    else:
        assert point == "moved-old"
    rerun = run_cli(args, tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    _assert_clean_result(out, want)
