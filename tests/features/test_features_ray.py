"""``goracs features --ray``: the gradient pass on Ray actors, against the single-process run.

Each Ray here is a local one of 2 CPUs that the test (or the command under test) starts and
stops. The fast tests score a tiny random Llama (:func:`tiny_llm`); the slow ones the packaged
SmolLM2.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from features_helpers import write_prepared

from goracs.cli import main
from goracs.cluster import parse_ray
from goracs.errors import GoracsError

ARRAYS = ("grad_norms", "el2n", "influence", "llm_train_emb", "llm_valid_emb")
GORACS = [sys.executable, "-m", "goracs.cli"]


def arrays(folder: Path, names=ARRAYS) -> dict[str, np.ndarray]:
    return {n: np.load(folder / "features" / f"{n}.npy") for n in names}


def assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert got.keys() == want.keys()
    for name, arr in want.items():
        assert got[name].dtype == arr.dtype and got[name].shape == arr.shape, name
        np.testing.assert_allclose(got[name], arr, rtol=1e-6, atol=1e-6, err_msg=name)


def cli_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2]
                                                                     / "src")}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the option -------------------------------------------------------------------------

def test_parse_ray_accepts_the_three_forms():
    assert parse_ray("local:2").local_cpus == 2
    assert parse_ray("auto").address == "auto"
    assert parse_ray("10.0.0.5:6379").address == "10.0.0.5:6379"
    assert parse_ray("ray://head:10001").address == "ray://head:10001"


@pytest.mark.parametrize("value", ["local:0", "local", "local:x", "nowhere", "host:0",
                                   "host:99999", ""])
def test_parse_ray_refuses_bad_values(value):
    with pytest.raises(GoracsError, match="--ray"):
        parse_ray(value)


@pytest.mark.parametrize("value", ["local:0", "local:-1", "nonsense"])
def test_bad_ray_values_are_one_line_and_exit_2(tmp_path, capsys, value):
    d = write_prepared(tmp_path / "d", "ctr", n_train=4, n_valid=2)
    assert main(["features", str(d), "--quiet", "--ray", value]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("goracs: error: --ray") and err.count("\n") == 1
    assert not (d / "features").exists()


def test_an_unreachable_cluster_is_one_line_within_seconds(tmp_path):
    d = write_prepared(tmp_path / "d", "ctr", n_train=4, n_valid=2)
    t0 = time.monotonic()
    p = subprocess.run(GORACS + ["features", str(d), "--quiet", "--ray",
                                 f"127.0.0.1:{closed_port()}"],
                       capture_output=True, text=True, env=cli_env(), timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("goracs: error: --ray 127.0.0.1:") and p.stderr.count("\n") == 1
    assert "no Ray cluster answers" in p.stderr
    assert time.monotonic() - t0 < 60
    assert not (d / "features").exists()


def test_ray_actors_needs_ray(tmp_path, capsys):
    d = write_prepared(tmp_path / "d", "ctr", n_train=4, n_valid=2)
    assert main(["features", str(d), "--quiet", "--ray-actors", "2"]) == 2
    assert "--ray-actors needs --ray" in capsys.readouterr().err


def test_nothing_imports_ray_without_the_option():
    code = ("import sys\n"
            "import goracs.cli, goracs.cluster, goracs.features.pipeline, "
            "goracs.features.ray_pass, goracs.features.commands\n"
            "from goracs.cluster import parse_ray\n"
            "parse_ray('local:2')\n"
            "print('ray' in sys.modules)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=cli_env(), timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "False"


# ---- the pass -----------------------------------------------------------------------------

def tiny_args(model: str) -> list[str]:
    return ["--quiet", "--model", model, "--embedding", "llm", "--batch-size", "2",
            "--threads", "1"]


def test_ray_pass_equals_the_single_process_one(tmp_path, tiny_llm):
    from goracs.features.pipeline import FeatureSettings, build_features
    from goracs.features.ray_pass import RayOptions

    one = write_prepared(tmp_path / "one", "ctr", n_train=40, n_valid=3)
    two = write_prepared(tmp_path / "two", "ctr", n_train=40, n_valid=3)
    s = FeatureSettings(model=tiny_llm, embedding="llm", batch_size=2)
    import torch

    torch.set_num_threads(1)
    build_features(one, s, progress=False)
    ray = RayOptions(parse_ray("local:2"), threads=1)
    manifest = build_features(two, s, progress=False, ray=ray)
    assert_close(arrays(two), arrays(one))
    assert manifest["ray"] == {"cluster": "local:2", "actors": 2, "threads_per_actor": 1,
                               "device": "cpu", "shards": 3}
    # Same cache files, same settings digest: a run without Ray finds the features current.
    assert (sorted(os.listdir(one / "features" / "cache"))
            == sorted(os.listdir(two / "features" / "cache")))
    m1 = json.loads((one / "features" / "features.json").read_text())
    assert m1["digests"] == manifest["digests"] and "ray" not in m1
    assert build_features(two, s, progress=False)["ray"] == manifest["ray"]


def kill_mid_run(argv: list[str], parts_root: Path, timeout: float = 300) -> int:
    """Run ``goracs`` in its own process group, SIGKILL the group once a shard file exists
    under ``parts_root`` (while the run has not finished); return the shards found then."""
    proc = subprocess.Popen(GORACS + argv, env=cli_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            shards = list(parts_root.glob("**/gradnorms-*.parts/shard-*.npy"))
            if shards:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        else:
            raise AssertionError("no shard written in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    return len(shards)


def test_a_killed_ray_run_resumes_to_the_same_arrays(tmp_path, tiny_llm):
    ref = write_prepared(tmp_path / "ref", "ctr", n_train=400, n_valid=3)
    d = write_prepared(tmp_path / "d", "ctr", n_train=400, n_valid=3)
    assert subprocess.run(GORACS + ["features", str(ref)] + tiny_args(tiny_llm),
                          env=cli_env(), capture_output=True, timeout=600).returncode == 0
    argv = ["features", str(d), "--ray", "local:2"] + tiny_args(tiny_llm)
    found = kill_mid_run(argv, d)
    assert found >= 1 and not (d / "features").exists()
    # The rerun (with Ray again) keeps the shards the killed one wrote, computes the rest.
    p = subprocess.run(GORACS + argv, env=cli_env(), capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr
    assert_close(arrays(d), arrays(ref))
    manifest = json.loads((d / "features" / "features.json").read_text())
    assert manifest["ray"]["shards"] <= 25 - found


# ---- the real model -----------------------------------------------------------------------

@pytest.mark.slow
def test_ray_equals_single_process_with_smollm2(tmp_path):
    one = write_prepared(tmp_path / "one", "seqrec", n_train=24, n_valid=3)
    two = write_prepared(tmp_path / "two", "seqrec", n_train=24, n_valid=3)
    common = ["--quiet", "--batch-size", "2", "--threads", "1", "--embedding", "both"]
    # The single-process run, in a process that reports whether it loaded Ray.
    code = ("import sys\nfrom goracs.cli import main\n"
            f"rc = main({['features', str(one)] + common!r})\n"
            "print(rc, 'ray' in sys.modules)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=cli_env(), timeout=1200)
    assert p.returncode == 0 and p.stdout.split()[-2:] == ["0", "False"], p.stderr
    p = subprocess.run(GORACS + ["features", str(two), "--ray", "local:2"] + common,
                       capture_output=True, text=True, env=cli_env(), timeout=1200)
    assert p.returncode == 0, p.stderr
    assert_close(arrays(two, ARRAYS + ("train_emb", "valid_emb")),
                 arrays(one, ARRAYS + ("train_emb", "valid_emb")))


@pytest.mark.slow
def test_a_killed_smollm2_ray_run_resumes_without_ray(tmp_path):
    ref = write_prepared(tmp_path / "ref", "ctr", n_train=48, n_valid=2)
    d = write_prepared(tmp_path / "d", "ctr", n_train=48, n_valid=2)
    common = ["--quiet", "--batch-size", "2", "--threads", "1", "--embedding", "llm"]
    assert subprocess.run(GORACS + ["features", str(ref)] + common, env=cli_env(),
                          capture_output=True, timeout=1200).returncode == 0
    found = kill_mid_run(["features", str(d), "--ray", "local:2"] + common, d, timeout=900)
    assert found >= 1 and not (d / "features").exists()
    # This time the rerun goes without Ray: the shards are the same files either way.
    p = subprocess.run(GORACS + ["features", str(d)] + common, env=cli_env(),
                       capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr
    assert_close(arrays(d), arrays(ref))
