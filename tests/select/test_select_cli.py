"""`goracs select` end to end, and its one-line errors on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from goracs.cli import main


@pytest.fixture()
def arrays(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    files = {
        "train": rng.normal(size=(120, 8)).astype(np.float32),
        "valid": rng.normal(size=(30, 8)).astype(np.float32),
        "grads": rng.uniform(1, 3, size=120).astype(np.float32),
        "tl": rng.integers(0, 2, size=120),
        "vl": np.array([0] * 18 + [1] * 12),
    }
    out = {}
    for k, v in files.items():
        out[k] = tmp_path / f"{k}.npy"
        np.save(out[k], v)
    out["train_st"] = tmp_path / "train.safetensors"
    save_file({"emb": files["train"]}, str(out["train_st"]))
    return out


def base_args(a: dict[str, Path], out: Path, budget: int = 10) -> list[str]:
    return ["select", "--train-emb", str(a["train"]), "--valid-emb", str(a["valid"]),
            "--grad-norms", str(a["grads"]), "--budget", str(budget), "--lam", "0.5",
            "--max-iters", "20", "--candidates", "5", "--out", str(out)]


def test_select_writes_the_manifest(arrays, tmp_path):
    out = tmp_path / "run"
    assert main(base_args(arrays, out)) == 0
    sel = json.loads((out / "selection.json").read_text())
    assert sel["method"] == "goracs" and sel["budget"] == 10
    assert len(sel["indices"]) == 10 and sel["indices"] == sorted(set(sel["indices"]))
    assert sel["poo"] == sel["trace"][-1]
    assert sel["params"]["lam"] == 0.5 and sel["params"]["max_iters"] == 20
    assert {"cost", "greedy", "exact_ot", "refine", "total"} <= set(sel["seconds"])
    assert 0 <= sel["pass_at_1"] <= 1
    assert [p.name for p in out.iterdir()] == ["selection.json"]


def test_same_seed_same_bytes_except_timings(arrays, tmp_path):
    runs = []
    for k in range(2):
        out = tmp_path / f"r{k}"
        assert main(base_args(arrays, out) + ["--seed", "3"]) == 0
        sel = json.loads((out / "selection.json").read_text())
        for key in ("seconds", "trace_seconds", "refine_stats", "inputs"):
            sel.pop(key)
        runs.append(json.dumps(sel, sort_keys=True))
    assert runs[0] == runs[1]


def test_safetensors_input_and_labels(arrays, tmp_path):
    out = tmp_path / "lab"
    args = base_args(arrays, out)
    args[args.index("--train-emb") + 1] = str(arrays["train_st"])
    args += ["--train-labels", str(arrays["tl"]), "--valid-labels", str(arrays["vl"])]
    assert main(args) == 0
    sel = json.loads((out / "selection.json").read_text())
    tl = np.load(arrays["tl"])
    assert sorted(np.bincount(tl[sel["indices"]]).tolist()) == [4, 6]
    assert set(sel["classes"]) == {"0", "1"}


def test_other_methods_through_the_same_command(arrays, tmp_path):
    for method in ("random", "kcenter", "grand", "goracs-greedy", "goracs-nograd",
                   "goracs-individual"):
        out = tmp_path / method
        assert main(base_args(arrays, out) + ["--method", method]) == 0
        sel = json.loads((out / "selection.json").read_text())
        assert sel["method"] == method and len(sel["indices"]) == 10


def _run_cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "goracs.cli", *args], capture_output=True,
                          text=True, timeout=300)


def _bad_cases(a: dict[str, Path], tmp: Path) -> dict[str, tuple[list[str], str]]:
    rng = np.random.default_rng(1)
    short = tmp / "short.npy"
    np.save(short, rng.uniform(1, 2, size=119).astype(np.float32))
    nan = tmp / "nan.npy"
    arr = rng.normal(size=(120, 8)).astype(np.float32)
    arr[5, 3] = np.nan
    np.save(nan, arr)
    inf = tmp / "inf.npy"
    g = rng.uniform(1, 2, size=120).astype(np.float32)
    g[7] = np.inf
    np.save(inf, g)
    junk = tmp / "junk.npy"
    junk.write_bytes(b"this is not an array")
    pickled = tmp / "obj.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    vl_missing = tmp / "vl_missing.npy"
    np.save(vl_missing, np.array([0] * 15 + [2] * 15))

    def swap(flag: str, path: Path) -> list[str]:
        args = base_args(a, tmp / "out")
        args[args.index(flag) + 1] = str(path)
        return args

    labels = ["--train-labels", str(a["tl"]), "--valid-labels", str(vl_missing)]
    return {
        "mismatched lengths": (swap("--grad-norms", short), "grad-norms has 119 rows"),
        "nan": (swap("--train-emb", nan), "NaN or inf"),
        "inf": (swap("--grad-norms", inf), "NaN or inf"),
        "budget zero": (base_args(a, tmp / "out", budget=0), "must be a positive integer"),
        "budget negative": (base_args(a, tmp / "out", budget=-3), "must be a positive integer"),
        "budget = pool": (base_args(a, tmp / "out", budget=120), "smaller than the pool"),
        "budget > pool": (base_args(a, tmp / "out", budget=500), "smaller than the pool"),
        "missing file": (swap("--valid-emb", tmp / "nope.npy"), "file not found"),
        "unreadable file": (swap("--train-emb", junk), "cannot read"),
        "pickled array": (swap("--train-emb", pickled), "cannot read"),
        "class without samples": (base_args(a, tmp / "out") + labels,
                                  "class 2 has budget 5 but no training samples"),
        "unknown method": (base_args(a, tmp / "out") + ["--method", "nope"], "unknown method"),
    }


def test_bad_input_gives_one_line_and_no_output(arrays, tmp_path):
    for name, (args, message) in _bad_cases(arrays, tmp_path).items():
        proc = _run_cli(args)
        assert proc.returncode == 2, (name, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, (name, proc.stderr)
        # argument errors name the command and flag, input errors say "error"
        assert lines[0].startswith(("goracs: error: ", "goracs select: --")), (name, lines)
        assert message in lines[0], (name, lines)
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / "out").exists(), name


def test_methods_lists_goracs_and_baselines(capsys):
    assert main(["methods"]) == 0
    listed = capsys.readouterr().out
    for name in ("goracs", "random", "kcenter", "herding", "grand"):
        assert f"\n{name} " in "\n" + listed


def _prepared_folder(tmp: Path, task: str, n_train: int = 80, n_valid: int = 20,
                     scores: bool = False) -> Path:
    """A folder laid out as `goracs prepare` + `goracs features` leave it (arrays synthetic);
    with ``scores``, EL2N and influence too, as `goracs features` writes them by default."""
    rng = np.random.default_rng(5)
    d = tmp / f"prep-{task}"
    (d / "features").mkdir(parents=True)
    answers = ["Yes", "No"]
    train = [{"instruction": "i", "input": f"sample {k}", "user": str(k % 7),
              "output": answers[k % 2] if task == "ctr" else f'"Item {k}"',
              "target": f"Item {k}", "timestamp": k} for k in range(n_train)]
    (d / "train.json").write_text(json.dumps(train))
    (d / "valid.json").write_text(json.dumps(train[:n_valid]))
    (d / "meta.json").write_text(json.dumps({"task": task, "dataset": "test"}))
    np.save(d / "features" / "train_emb.npy", rng.normal(size=(n_train, 6)).astype(np.float32))
    np.save(d / "features" / "valid_emb.npy", rng.normal(size=(n_valid, 6)).astype(np.float32))
    np.save(d / "features" / "grad_norms.npy", rng.uniform(1, 2, n_train).astype(np.float32))
    if task == "ctr":
        np.save(d / "features" / "train_labels.npy", (np.arange(n_train) % 2 == 0).astype(int))
        np.save(d / "features" / "valid_labels.npy", (np.arange(n_valid) < 15).astype(int))
    if scores:
        np.save(d / "features" / "el2n.npy", rng.uniform(0, 1.4, n_train).astype(np.float32))
        np.save(d / "features" / "influence.npy",
                rng.normal(1e-4, 1e-5, n_train).astype(np.float32))
    write_features_manifest(d, task)
    return d


def write_features_manifest(d: Path, task: str) -> None:
    """A features.json as `goracs features` writes it, as far as `select --data` reads it:
    the task and the digests of the records the features come from."""
    from goracs.cache import path_fingerprint

    files = {p.stem: p.name for p in (d / "features").glob("*.npy")}
    (d / "features" / "features.json").write_text(json.dumps({
        "task": task, "n_train": len(json.loads((d / "train.json").read_text())),
        "files": files, "digests": {"train": path_fingerprint(d / "train.json"),
                                    "valid": path_fingerprint(d / "valid.json"),
                                    "settings": "test"}}))


@pytest.mark.parametrize("task", ["seqrec", "ctr"])
def test_select_from_a_prepared_folder(tmp_path, task):
    d = _prepared_folder(tmp_path, task)
    out = tmp_path / "sel"
    assert main(["select", "--data", str(d), "--budget", "8", "--max-iters", "10",
                 "--candidates", "4", "--out", str(out)]) == 0
    sel = json.loads((out / "selection.json").read_text())
    coreset = json.loads((out / "coreset.json").read_text())
    train = json.loads((d / "train.json").read_text())
    assert coreset == [train[i] for i in sel["indices"]]
    assert sel["params"]["lam"] == {"seqrec": 0.1, "ctr": 0.5}[task]
    assert sel["task"] == task
    if task == "ctr":  # label-enhanced: 15 of 20 validation samples are Yes (label 1)
        assert [r["output"] for r in coreset].count("Yes") == 6


def test_a_validation_set_of_few_users_is_named(tmp_path, capsys):
    d = _prepared_folder(tmp_path, "seqrec")  # 20 validation samples from 7 users
    args = ["select", "--data", str(d), "--budget", "8", "--max-iters", "5", "--out"]
    assert main([*args, str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    sel = json.loads((tmp_path / "a" / "selection.json").read_text())
    assert sel["valid_users"] == {"samples": 20, "users": 7, "top5_share": 0.75}
    assert "note: the validation set's 20 samples come from 7 users, the 5 heaviest " \
           "holding 75%" in err
    # a method that does not look at the validation set: nothing recorded, no note
    assert main([*args, str(tmp_path / "b"), "--method", "random"]) == 0
    assert "note:" not in capsys.readouterr().err
    assert "valid_users" not in json.loads((tmp_path / "b" / "selection.json").read_text())
    # one sample per user: recorded, and nothing to note
    valid = json.loads((d / "valid.json").read_text())
    (d / "valid.json").write_text(json.dumps([dict(r, user=f"v{k}")
                                              for k, r in enumerate(valid)]))
    write_features_manifest(d, "seqrec")
    assert main([*args, str(tmp_path / "c")]) == 0
    assert "note:" not in capsys.readouterr().err
    sel = json.loads((tmp_path / "c" / "selection.json").read_text())
    assert sel["valid_users"]["users"] == 20


def test_select_from_a_folder_without_features_fails_cleanly(tmp_path):
    d = _prepared_folder(tmp_path, "seqrec")
    (d / "features" / "features.json").unlink()
    proc = _run_cli(["select", "--data", str(d), "--budget", "8", "--out",
                     str(tmp_path / "sel")])
    assert proc.returncode == 2 and "run `goracs features" in proc.stderr
    assert not (tmp_path / "sel").exists()


def test_select_from_a_folder_picks_up_its_scores(tmp_path):
    d = _prepared_folder(tmp_path, "seqrec", scores=True)
    el2n = np.load(d / "features" / "el2n.npy")
    top = sorted(np.argsort(-el2n, kind="stable")[:8].tolist())
    out = tmp_path / "el2n"
    assert main(["select", "--data", str(d), "--budget", "8", "--method", "el2n",
                 "--out", str(out)]) == 0
    sel = json.loads((out / "selection.json").read_text())
    assert sel["indices"] == top
    assert sel["inputs"]["scores"] == {"el2n": str(d / "features" / "el2n.npy"),
                                       "influence": str(d / "features" / "influence.npy")}
    out = tmp_path / "dealrec"
    assert main(["select", "--data", str(d), "--budget", "8", "--method", "dealrec",
                 "--param", "n_groups=5", "--out", str(out)]) == 0
    sel = json.loads((out / "selection.json").read_text())
    assert sel["method"] == "dealrec" and len(sel["indices"]) == 8
    # The task's GORACS lambda is not DEALRec's effort weight: its own default stays.
    assert sel["params"]["lam"] == 1.0
    # A score the user names explicitly wins over the folder's.
    mine = tmp_path / "mine.npy"
    np.save(mine, np.arange(80, dtype=np.float32))
    out = tmp_path / "mine"
    assert main(["select", "--data", str(d), "--budget", "8", "--method", "el2n",
                 "--score", f"el2n={mine}", "--out", str(out)]) == 0
    sel = json.loads((out / "selection.json").read_text())
    assert sel["indices"] == list(range(72, 80))
    assert sel["inputs"]["scores"]["el2n"] == str(mine)


def test_select_el2n_from_a_folder_without_scores_fails_cleanly(tmp_path):
    d = _prepared_folder(tmp_path, "ctr")
    proc = _run_cli(["select", "--data", str(d), "--budget", "8", "--method", "el2n",
                     "--out", str(tmp_path / "sel")])
    assert proc.returncode == 2 and "per-sample score 'el2n'" in proc.stderr
    assert proc.stderr.count("\n") == 1 and not (tmp_path / "sel").exists()


def test_select_on_the_llm_embeddings_of_a_folder(tmp_path):
    d = _prepared_folder(tmp_path, "seqrec")
    base = ["select", "--data", str(d), "--budget", "8", "--max-iters", "10",
            "--candidates", "4"]
    proc = _run_cli(base + ["--embedding", "llm", "--out", str(tmp_path / "none")])
    assert proc.returncode == 2 and "llm_train_emb.npy not found" in proc.stderr
    assert not (tmp_path / "none").exists()
    rng = np.random.default_rng(3)
    np.save(d / "features" / "llm_train_emb.npy", rng.normal(size=(80, 9)).astype(np.float32))
    np.save(d / "features" / "llm_valid_emb.npy", rng.normal(size=(20, 9)).astype(np.float32))
    assert main(base + ["--embedding", "llm", "--out", str(tmp_path / "llm")]) == 0
    assert main(base + ["--out", str(tmp_path / "enc")]) == 0
    llm = json.loads((tmp_path / "llm" / "selection.json").read_text())
    enc = json.loads((tmp_path / "enc" / "selection.json").read_text())
    assert llm["inputs"]["train_emb"].endswith("llm_train_emb.npy")
    assert llm["indices"] != enc["indices"]
    proc = _run_cli(["select", "--embedding", "llm", "--train-emb", "x.npy", "--budget", "8",
                     "--out", str(tmp_path / "x")])
    assert proc.returncode == 2 and "--embedding llm goes with --data" in proc.stderr
