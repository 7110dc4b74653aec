"""The streaming GORACS engine selects what the dense one does, without an N x V array."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
from select_reference import random_instance

from goracs.errors import GoracsError
from goracs.select import GORACS
from goracs.select.cost import poo_cost
from goracs.select.cost_blocks import CostBlocks, RowStore
from goracs.select.goracs import GORACSIndividual
from goracs.select.greedy import greedy_select
from goracs.select.memory import choose_engine, parse_memory
from goracs.select.streaming import greedy_select_streaming


def assert_same(dense: GORACS, stream: GORACS) -> None:
    assert dense.info_["engine"] == "dense" and stream.info_["engine"] == "streaming"
    assert dense.objective_ is not None and stream.objective_ is not None
    if not np.array_equal(dense.indices_, stream.indices_):
        assert abs(dense.objective_ - stream.objective_) <= 1e-6
    else:
        assert dense.objective_ == pytest.approx(stream.objective_, abs=1e-9)
    assert dense.info_["poo_greedy"] == pytest.approx(stream.info_["poo_greedy"], abs=1e-9)


def test_cost_rows_are_the_dense_rows_bit_for_bit():
    d = random_instance(0, n_train=700, n_valid=90)
    dense = poo_cost(d.train_emb, d.valid_emb, d.grad_norms, 0.5)
    blocks = CostBlocks(d.train_emb, d.valid_emb, d.grad_norms, 0.5, block_rows=64)
    stacked = np.concatenate([blk for _, blk in blocks.blocks()])
    np.testing.assert_array_equal(stacked, dense)
    rng = np.random.default_rng(1)
    for m in (1, 2, 5, 33):
        rows = rng.choice(700, size=m, replace=False)
        np.testing.assert_array_equal(blocks.rows(rows), dense[rows])


def numpy_cost(train: np.ndarray, valid: np.ndarray, grad_norms: np.ndarray, lam: float
               ) -> np.ndarray:
    """The cost matrix by the NumPy expressions the fused kernels replace, step by step."""
    sq = train @ np.ascontiguousarray(valid.T)
    dist = (np.einsum("ij,ij->i", train, train, dtype=np.float64)[:, None]
            + np.einsum("ij,ij->i", valid, valid, dtype=np.float64)[None, :]
            - 2.0 * sq.astype(np.float64))
    dist = np.sqrt(np.maximum(dist, 0.0)).astype(np.float32)
    inv_d = 1.0 / float(dist.max())
    g_term = lam * (grad_norms.astype(np.float64) / float(grad_norms.max()))
    lo = dist.min(axis=1).astype(np.float64) * inv_d - g_term
    hi = dist.max(axis=1).astype(np.float64) * inv_d - g_term
    c_min = float(lo.min())
    blk = dist.astype(np.float64) * inv_d
    blk -= (g_term + c_min)[:, None]
    blk *= 1.0 / (float(hi.max()) - c_min)
    return np.clip(blk, 0.0, 1.0).astype(np.float32)


def test_fused_cost_is_the_numpy_formula_and_a_lone_last_row_agrees():
    d = random_instance(3, n_train=129, n_valid=70)  # 2 blocks of 64, then a lone row
    ref = numpy_cost(d.train_emb[:128], d.valid_emb, d.grad_norms[:128], 0.5)
    np.testing.assert_array_equal(
        poo_cost(d.train_emb[:128], d.valid_emb, d.grad_norms[:128], 0.5, block_rows=128), ref)
    dense = poo_cost(d.train_emb, d.valid_emb, d.grad_norms, 0.5, block_rows=64)
    blocks = CostBlocks(d.train_emb, d.valid_emb, d.grad_norms, 0.5, block_rows=64)
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks.blocks()]), dense)
    np.testing.assert_array_equal(blocks.rows(np.array([128])), dense[128:])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("lam", [0.5, 0.1])
@pytest.mark.parametrize("labels", [False, True])
def test_streaming_selects_what_dense_selects(seed, lam, labels):
    data = random_instance(seed, labels=labels)
    kw = {"budget": 64, "lam": lam, "max_iters": 40, "candidates": 10}
    dense = GORACS(**kw, engine="dense").fit(data)
    stream = GORACS(**kw, engine="streaming").fit(data)
    assert_same(dense, stream)


@pytest.mark.parametrize("stop", ["exact", "assigned"])
@pytest.mark.parametrize("saturation", ["capacity", "index"])
def test_streaming_greedy_past_saturation(stop, saturation):
    data = random_instance(5, n_train=400, n_valid=60, dim=4, saturate=True)
    cost = poo_cost(data.train_emb, data.valid_emb, data.grad_norms, 0.5)
    want = greedy_select(cost, 24, stop=stop, saturation=saturation)
    blocks = CostBlocks(data.train_emb, data.valid_emb, data.grad_norms, 0.5, block_rows=50)
    got, pt = greedy_select_streaming(blocks, RowStore(blocks, 80), 24, stop=stop,
                                      saturation=saturation)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.gains, want.gains)
    assert got.capacity_picks == want.capacity_picks
    if saturation == "capacity" and stop == "exact":
        assert want.capacity_picks > 0 and pt is not None


@pytest.mark.parametrize("labels", [False, True])
def test_saturating_selection_matches(labels):
    data = random_instance(7, n_train=600, n_valid=96, dim=4, labels=labels, saturate=True)
    kw = {"budget": 24, "lam": 0.5, "max_iters": 30, "candidates": 5}
    dense = GORACS(**kw, engine="dense").fit(data)
    stream = GORACS(**kw, engine="streaming").fit(data)
    assert dense.info_["capacity_picks"] > 0
    assert_same(dense, stream)


def test_streaming_never_holds_the_dense_matrix():
    data = random_instance(3, n_train=3000, n_valid=800)
    n_train, n_valid = 3000, 800
    sel = GORACS(budget=32, lam=0.5, max_iters=10, candidates=5, medoid_rounds=3,
                 engine="streaming")
    peak = peak_of_second_fit(sel, data)
    assert sel.info_["engine"] == "streaming"
    assert peak < 0.4 * n_train * n_valid * 4, peak


def peak_of_second_fit(sel: GORACS, data) -> int:
    """Peak traced bytes of ``sel.fit(data)`` on cost blocks of 64 rows, measured on a second
    fit: numba's own allocations while compiling are not what is measured."""
    import goracs.select.goracs as engine_module

    real = engine_module.CostBlocks
    engine_module.CostBlocks = lambda *a, **k: real(*a, **k, block_rows=64)  # type: ignore
    try:
        sel.fit(data)
        tracemalloc.start()
        sel.fit(data)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        engine_module.CostBlocks = real
    return peak


@pytest.mark.parametrize("lam", [0.5, 0.0])
def test_individual_selection_is_the_same_on_both_engines(lam):
    data = random_instance(1, n_train=900, n_valid=120, labels=True)
    dense = GORACSIndividual(budget=40, lam=lam, engine="dense").fit(data)
    stream = GORACSIndividual(budget=40, lam=lam, engine="streaming").fit(data)
    assert dense.info_["engine"] == "dense" and stream.info_["engine"] == "streaming"
    np.testing.assert_array_equal(dense.indices_, stream.indices_)
    # the exact POO runs on the chosen rows, computed apart from their blocks: 1e-9 as for GORACS
    assert dense.objective_ == pytest.approx(stream.objective_, abs=1e-9)
    assert stream.info_["cost_passes"] >= 1
    # the definition: the 40 rows of least mean cost, labels ignored
    own = poo_cost(data.train_emb, data.valid_emb, data.grad_norms, lam).mean(
        axis=1, dtype=np.float64)
    np.testing.assert_array_equal(stream.indices_, np.sort(np.argsort(own, kind="stable")[:40]))
    lo, hi = stream.info_["own_cost_range"]
    assert lo == pytest.approx(own.min()) and hi == pytest.approx(np.sort(own)[39])


def test_individual_streaming_never_holds_the_dense_matrix():
    data = random_instance(3, n_train=3000, n_valid=800)
    peak = peak_of_second_fit(GORACSIndividual(budget=32, lam=0.5, engine="streaming"), data)
    assert peak < 0.2 * 3000 * 800 * 4, peak


def test_auto_engine_follows_the_budget():
    data = random_instance(4, n_train=6000, n_valid=300, dim=8)
    # dense needs about 13 MB here (7 MB of it the cost matrix), streaming about 7 MB
    small = GORACS(budget=16, max_iters=5, candidates=4, max_memory="10MB").fit(data)
    big = GORACS(budget=16, max_iters=5, candidates=4, max_memory="1GB").fit(data)
    assert small.info_["engine"] == "streaming" and big.info_["engine"] == "dense"
    assert small.result().to_json()["engine"] == "streaming"
    np.testing.assert_array_equal(small.indices_, big.indices_)
    with pytest.raises(GoracsError, match="dense engine needs about"):
        GORACS(budget=16, engine="dense", max_memory="1MB").fit(data)
    with pytest.raises(GoracsError, match="even streaming"):
        choose_engine("auto", [(10**6, 5000, 1024)], 10**6)


def test_memory_sizes_parse():
    assert parse_memory("6GB") == 6 * 2**30 and parse_memory("512mb") == 512 * 2**20
    assert parse_memory("2.5G") == int(2.5 * 2**30) and parse_memory(1000) == 1000
    for bad in ("lots", "-1GB", 0, True):
        with pytest.raises(GoracsError, match="max-memory"):
            parse_memory(bad)
    with pytest.raises(GoracsError, match="engine"):
        GORACS(budget=4, engine="sparse")


def test_the_command_line_names_the_engine(tmp_path, capsys):
    from goracs.cli import main

    data = random_instance(6, n_train=2000, n_valid=300, dim=16)
    paths = {}
    for name, arr in (("t", data.train_emb), ("v", data.valid_emb), ("g", data.grad_norms)):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], arr)
    docs = {}
    for size in ("7MB", "1GB"):
        out = tmp_path / size
        assert main(["select", "--train-emb", str(paths["t"]), "--valid-emb", str(paths["v"]),
                     "--grad-norms", str(paths["g"]), "--budget", "32", "--max-iters", "10",
                     "--candidates", "5", "--max-memory", size, "--out", str(out)]) == 0
        docs[size] = json.loads((out / "selection.json").read_text())
        assert f"engine: {docs[size]['engine']} (" in capsys.readouterr().err
        assert docs[size]["params"]["max_memory"] == size
    assert docs["7MB"]["engine"] == "streaming" and docs["1GB"]["engine"] == "dense"
    assert docs["7MB"]["indices"] == docs["1GB"]["indices"]
