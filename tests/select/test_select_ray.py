"""GORACS's passes over the pool as Ray tasks (``ray=``, ``goracs select --ray``): the same
selection as the local streaming and the dense engines, and no Ray without ``--ray``.

The module starts one local Ray of 2 CPUs and stops it at the end; the selectors lend it
(``info["ray"]["session"] == "existing"``). One command-line test starts its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from select_reference import random_instance

from goracs.cli import main
from goracs.cluster import parse_ray
from goracs.errors import GoracsError
from goracs.select import GORACS
from goracs.select.cost_blocks import CostBlocks
from goracs.select.goracs import GORACSIndividual
from goracs.select.streaming import (
    _block_fill_costs,
    _block_gains,
    _block_impacts,
    _block_row_sums,
    _block_smallest,
)

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray of 2 CPUs for the module, stopped at its end."""
    if ray.is_initialized():
        pytest.skip("Ray is initialised already in this process")
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def assert_identical(a: GORACS, b: GORACS) -> None:
    np.testing.assert_array_equal(a.indices_, b.indices_)
    assert a.objective_ == b.objective_
    assert a.trace_ == b.trace_
    assert a.info_["poo_greedy"] == b.info_["poo_greedy"]


@pytest.mark.parametrize("labels", [False, True])
def test_ray_selects_what_streaming_and_dense_select(labels):
    data = random_instance(0, labels=labels)
    kw = {"budget": 64, "lam": 0.5, "max_iters": 40, "candidates": 10}
    dense = GORACS(**kw, engine="dense").fit(data)
    local = GORACS(**kw, engine="streaming").fit(data)
    on_ray = GORACS(**kw, ray="local:2").fit(data)
    assert on_ray.info_["engine"] == "streaming"
    assert_identical(local, on_ray)
    np.testing.assert_array_equal(dense.indices_, on_ray.indices_)
    assert dense.objective_ == pytest.approx(on_ray.objective_, abs=1e-9)
    info = on_ray.info_["ray"]
    assert info["session"] == "existing" and info["cpus"] == 2
    # the extremes, greedy's two passes, medoid pricing and impacts; per class with labels
    assert info["passes"] >= (8 if labels else 4) and info["tasks"] >= info["passes"]
    assert on_ray.params_["ray"] == "local:2"
    if not labels:  # every pass over the pool ran on Ray
        assert info["passes"] == on_ray.info_["cost_passes"] == local.info_["cost_passes"]


def test_ray_scores_individual_selection_as_the_local_run_does():
    data = random_instance(2)
    local = GORACSIndividual(budget=32, lam=0.5, engine="streaming").fit(data)
    on_ray = GORACSIndividual(budget=32, lam=0.5, ray="local:2").fit(data)
    np.testing.assert_array_equal(local.indices_, on_ray.indices_)
    assert local.objective_ == on_ray.objective_
    assert on_ray.info_["ray"]["passes"] == on_ray.info_["cost_passes"] >= 1


def test_ray_past_saturation_fills_as_the_local_run_does():
    data = random_instance(5, n_train=400, n_valid=60, dim=4, saturate=True)
    kw = {"budget": 24, "lam": 0.5, "max_iters": 10, "candidates": 5}
    local = GORACS(**kw, engine="streaming").fit(data)
    on_ray = GORACS(**kw, ray="local:2").fit(data)
    assert local.info_["capacity_picks"] > 0
    assert on_ray.info_["capacity_picks"] == local.info_["capacity_picks"]
    assert_identical(local, on_ray)


def test_every_pass_is_bit_identical_block_by_block():
    """Many blocks, several per task: every per-block result equals the local one exactly."""
    from goracs.select.remote import RayBlocks, ray_pool

    d = random_instance(3, n_train=1500, n_valid=70)
    here = CostBlocks(d.train_emb, d.valid_emb, d.grad_norms, 0.5, block_rows=64)
    with ray_pool(parse_ray("local:2")) as pool:
        there = RayBlocks(pool, d.train_emb, d.valid_emb, d.grad_norms, 0.5, block_rows=64)
        assert pool.tasks == 8  # the extremes: 24 blocks in 4 tasks per CPU
        assert there.scale.inv_d == here.scale.inv_d and there.scale.c_min == here.scale.c_min
        assert there.scale.scale == here.scale.scale
        rng = np.random.default_rng(0)
        coreset = rng.choice(1500, size=20, replace=False)
        n, k, nv = 20, 4, 70
        col_slot = rng.integers(0, n, size=(nv, 2))
        col_flow = rng.uniform(0, 1, size=(nv, 2))
        col_deg = rng.integers(1, 3, size=nv)
        passes = [
            (_block_row_sums, ()),
            (_block_gains, (rng.uniform(0, 1, size=nv),)),
            (_block_fill_costs, (rng.uniform(-0.1, 0.1, size=nv), 1 / 20, 1 / 70, 4)),
            (_block_impacts, (coreset, rng.uniform(0, 1, nv), rng.uniform(1, 2, nv),
                              rng.integers(0, n, nv), 4, float(n))),
            (_block_smallest, (np.sort(coreset), col_slot, col_flow, col_deg, n, 1 / 20, k,
                               1500)),
        ]
        for fn, args in passes:
            want = list(here.map(fn, *args))
            got = list(there.map(fn, *args))
            assert [s for s, _ in got] == [s for s, _ in want]
            for (_, a), (_, b) in zip(want, got, strict=True):
                for x, y in zip(a if isinstance(a, tuple) else (a,),
                                b if isinstance(b, tuple) else (b,), strict=True):
                    np.testing.assert_array_equal(x, y)
        assert there.passes == here.passes


def test_bad_ray_parameters_are_one_line_errors():
    with pytest.raises(GoracsError, match="local needs a positive number"):
        GORACS(budget=8, ray="local:0")
    with pytest.raises(GoracsError, match="expected"):
        GORACS(budget=8, ray="somewhere")
    with pytest.raises(GoracsError, match="streaming"):
        GORACS(budget=8, ray="local:2", engine="dense")
    with pytest.raises(GoracsError, match="ray must be a text"):
        GORACS(budget=8, ray=2)  # type: ignore[arg-type]


# -- the command line --------------------------------------------------------------------

@pytest.fixture()
def arrays(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    files = {"train": rng.normal(size=(300, 8)).astype(np.float32),
             "valid": rng.normal(size=(40, 8)).astype(np.float32),
             "grads": rng.uniform(1, 3, size=300).astype(np.float32)}
    out = {}
    for key, arr in files.items():
        out[key] = tmp_path / f"{key}.npy"
        np.save(out[key], arr)
    return out


def select_args(a: dict[str, Path], out: Path) -> list[str]:
    return ["select", "--train-emb", str(a["train"]), "--valid-emb", str(a["valid"]),
            "--grad-norms", str(a["grads"]), "--budget", "12", "--lam", "0.5",
            "--max-iters", "10", "--candidates", "5", "--out", str(out)]


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)


def test_select_without_ray_never_imports_it(arrays, tmp_path):
    args = select_args(arrays, tmp_path / "out")
    proc = _python("import sys\nfrom goracs.cli import main\n"
                   f"rc = main({args!r})\nprint(rc, 'ray' in sys.modules)\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "False"]


@pytest.mark.parametrize("value,message", [
    ("local:0", "local needs a positive number of CPUs"),
    ("local:x", "local needs a positive number of CPUs"),
    ("nowhere", "expected local:N"),
    ("host:99999", "expected local:N"),
    ("127.0.0.1:1", "no Ray cluster answers there"),
])
def test_bad_ray_values_are_one_line_exit_2(arrays, tmp_path, capsys, value, message):
    out = tmp_path / "out"
    assert main(select_args(arrays, out) + ["--ray", value]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not out.exists()


def test_ray_with_a_method_that_runs_here_only(arrays, tmp_path, capsys):
    assert main(select_args(arrays, tmp_path / "out") + ["--method", "random",
                                                          "--ray", "local:1"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "runs here only" in lines[0], lines


def test_select_with_ray_local_records_it_and_selects_the_same(arrays, tmp_path):
    """A command that starts (and stops) its own local Ray, in a process of its own."""
    assert main(select_args(arrays, tmp_path / "here")) == 0
    args = select_args(arrays, tmp_path / "ray") + ["--ray", "local:1"]
    proc = _python(f"import sys\nfrom goracs.cli import main\nsys.exit(main({args!r}))\n")
    assert proc.returncode == 0, proc.stderr
    here = json.loads((tmp_path / "here" / "selection.json").read_text())
    there = json.loads((tmp_path / "ray" / "selection.json").read_text())
    assert there["engine"] == "streaming"
    assert there["ray"]["address"] == "local:1" and there["ray"]["session"] == "started"
    assert there["ray"]["tasks"] >= there["ray"]["passes"] > 0
    assert there["params"]["ray"] == "local:1"
    assert "ray: " in proc.stderr
    assert here["indices"] == there["indices"]
    assert here["poo"] == pytest.approx(there["poo"], abs=1e-12)
