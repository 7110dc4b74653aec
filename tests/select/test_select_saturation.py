"""Greedy past saturation: the capacitated continuation against brute force and old behaviour."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.optimize import linprog
from select_reference import naive_greedy

from goracs.cli import main
from goracs.errors import GoracsError
from goracs.select import GORACS, SelectionData, TransportState
from goracs.select.capacity import PartialTransport, capacity_fill
from goracs.select.cost import poo_cost
from goracs.select.greedy import greedy_init, greedy_select
from goracs.select.ot import poo_value


def saturating(seed: int, n_train: int = 120, n_valid: int = 48):
    """A pool where a few samples with large gradient norms are the cheapest option for every
    validation sample, so that the relaxed gains run out after a handful of picks."""
    rng = np.random.default_rng(seed)
    te = rng.normal(size=(n_train, 4)).astype(np.float32)
    ve = rng.normal(size=(n_valid, 4)).astype(np.float32)
    g = rng.uniform(1, 2, size=n_train).astype(np.float32)
    g[rng.choice(n_train, 12, replace=False)] *= 3
    return te, ve, g


def relaxed_gains(cost: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """Brute force: the drop in sum_j min_{i in S} C_ij as each pick joins, in pick order."""
    best = np.full(cost.shape[1], np.inf)
    out = []
    for e in picks:
        row = cost[e].astype(np.float64)
        out.append(np.inf if np.isinf(best).all() else float(np.maximum(best - row, 0).sum()))
        np.minimum(best, row, out=best)
    return np.array(out)


def lp_partial(cost: np.ndarray, rows: np.ndarray, n: int) -> float:
    """PT(S) as a plain linear program (HiGHS): p units per row of S, at most q per column,
    in mass units (divided by n p)."""
    nv = cost.shape[1]
    g = math.gcd(n, nv)
    p, q = nv // g, n // g
    k = len(rows)
    a_eq = np.zeros((k, k * nv))
    a_ub = np.zeros((nv, k * nv))
    for i in range(k):
        a_eq[i, i * nv:(i + 1) * nv] = 1.0
    for j in range(nv):
        a_ub[j, j::nv] = 1.0
    res = linprog(cost[rows].astype(np.float64).ravel(), A_ub=a_ub, b_ub=np.full(nv, q),
                  A_eq=a_eq, b_eq=np.full(k, p), bounds=(0, None), method="highs")
    assert res.status == 0
    return float(res.fun) / (n * p)


@pytest.mark.parametrize("seed", range(4))
def test_zero_gain_picks_are_not_index_order(seed):
    te, ve, g = saturating(seed)
    cost = poo_cost(te, ve, g, 0.5)
    old = greedy_select(cost, 24, saturation="index")
    new = greedy_select(cost, 24)
    k = old.positive_gain_picks
    assert 0 < k < 24 and new.positive_gain_picks == k and new.capacity_picks == 24 - k
    np.testing.assert_array_equal(new.indices[:k], old.indices[:k])
    # the plain greedy takes the zero-gain picks in index order: the smallest indices left...
    rest = np.setdiff1d(np.arange(120), old.indices[:k])[: 24 - k]
    np.testing.assert_array_equal(np.sort(old.indices[k:]), rest)
    # ...the capacitated continuation does not, and its coreset transports better
    assert not np.array_equal(np.sort(new.indices[k:]), rest)
    assert len(set(new.indices.tolist())) == 24
    assert poo_value(cost, new.indices) < poo_value(cost, old.indices)


@pytest.mark.parametrize("saturation", ["capacity", "index"])
@pytest.mark.parametrize("stop", ["exact", "assigned"])
@pytest.mark.parametrize("seed", range(3))
def test_positive_gain_picks_match_brute_force(seed, stop, saturation):
    te, ve, g = saturating(seed)
    cost = poo_cost(te, ve, g, 0.5)
    res = greedy_select(cost, 20, stop=stop, saturation=saturation)
    assert res.indices.shape == (20,) and len(set(res.indices.tolist())) == 20
    if stop == "exact":  # pick order: the gains are those of the loop itself
        brute = relaxed_gains(cost, res.indices)
        np.testing.assert_allclose(res.gains[1:], brute[1:], rtol=1e-9, atol=1e-12)
        assert res.positive_gain_picks == int(np.sum(brute > 0))
    # whatever the order, the positive-gain picks are exactly the plain loop's until saturation
    naive = naive_greedy(cost, 20)
    brute = relaxed_gains(cost, naive)
    n_pos = int(np.sum(brute > 0))
    assert brute[n_pos:].sum() == 0  # gains only shrink: zero-gain picks come last
    if stop == "exact":
        assert res.positive_gain_picks == n_pos
    assert set(res.indices[res.gains > 0].tolist()) <= set(naive[:n_pos].tolist())


def test_deterministic_and_the_old_mode_reproduces_the_old_indices():
    te, ve, g = saturating(2)
    cost = poo_cost(te, ve, g, 0.5)
    a, b = greedy_select(cost, 24), greedy_select(cost, 24)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.gains, b.gains)
    # indices the code before the capacitated continuation returned on this instance
    old_exact = [115, 24, 50, 14, 32, 18, 43, 63, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
                 15, 16]
    assert greedy_init(cost, 24, saturation="index").tolist() == old_exact
    np.testing.assert_array_equal(naive_greedy(cost, 24), old_exact)
    old_assigned = [115, 24, 50, 14, 32, 18, 43, 63, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert greedy_init(cost, 20, stop="assigned", saturation="index").tolist() == old_assigned
    data = SelectionData(train_emb=te, valid_emb=ve, grad_norms=g)
    kw = {"budget": 24, "lam": 0.5, "max_iters": 30, "candidates": 5, "saturation": "index"}
    old = GORACS(**kw).fit(data)
    assert old.indices_.tolist() == [8, 13, 14, 15, 18, 24, 32, 33, 38, 39, 43, 50, 56, 63, 71,
                                     72, 77, 90, 98, 105, 106, 114, 115, 117]
    assert old.objective_ == pytest.approx(0.21039940614718944, abs=1e-12)
    assert old.info_["poo_greedy"] == pytest.approx(0.2683466956562673, abs=1e-12)


@pytest.mark.parametrize("n,n_valid", [(12, 48), (10, 48), (7, 30)])  # q = 1, q > 1, p/q odd
def test_partial_transport_is_optimal_at_every_size(n, n_valid):
    rng = np.random.default_rng(n * 7 + n_valid)
    cost = rng.random((40, n_valid)).astype(np.float32)
    rows = rng.choice(40, size=n, replace=False)
    pt = PartialTransport(cost, n)
    for k, r in enumerate(rows):
        pt.add(int(r))
        assert abs(pt.value() - lp_partial(cost, rows[:k + 1], n)) < 1e-9
        reduced = cost[rows[:k + 1]].astype(np.float64) - pt.u[:k + 1, None] - pt.v
        plan = pt.dense_plan()
        assert reduced.min() > -1e-9 and np.abs(reduced[plan > 0]).max() < 1e-9
        assert np.all(pt.v <= 0) and np.all(pt.v[pt.room > 0] == 0)
        np.testing.assert_array_equal(plan.sum(1), pt.p)
        assert np.all(plan.sum(0) <= pt.q)
    # complete: the plan is an optimal POO plan, and a TransportState can start from it
    state = pt.state()
    assert abs(state.poo - poo_value(cost, rows)) < 1e-9
    fresh = TransportState(cost, rows)
    inside = set(rows.tolist())
    o = next(k for k in range(40) if k not in inside)
    assert abs(state.try_swap(int(rows[0]), o) - fresh.try_swap(int(rows[0]), o)) < 1e-9


@pytest.mark.parametrize("n,n_valid", [(12, 48), (10, 48), (7, 30)])
def test_fill_cost_is_the_priced_fill_and_a_lower_bound(n, n_valid):
    rng = np.random.default_rng(n + n_valid)
    cost = rng.random((40, n_valid)).astype(np.float32)
    rows = rng.choice(40, size=n - 1, replace=False)
    pt = PartialTransport(cost, n)
    for r in rows:
        pt.add(int(r))
    outside = np.setdiff1d(np.arange(40), rows)
    phi = pt.fill_costs(outside)
    for e, f in zip(outside, phi, strict=True):
        # p units into columns priced C_ej - v_j, at most q each: a bounded linear program
        price = cost[e].astype(np.float64) - pt.v
        res = linprog(price, A_eq=np.ones((1, n_valid)), b_eq=[pt.p],
                      bounds=[(0, pt.q)] * n_valid, method="highs")
        assert f == pytest.approx(res.fun, abs=1e-9)
        # no lower than the exact rise of the partial transport when e joins (weak duality)
        rise = (lp_partial(cost, np.append(rows, e), n)
                - lp_partial(cost, rows, n)) * n * pt.p
        assert f <= rise + 1e-9


def test_fill_costs_only_rise_and_lazy_equals_naive():
    te, ve, g = saturating(1)
    cost = poo_cost(te, ve, g, 0.5)
    start = greedy_select(cost, 24, saturation="index")
    k0 = start.positive_gain_picks
    lazy, _ = capacity_fill(cost, start.indices[:k0], 24)
    # naive: every fill cost recomputed at every step, the smallest taken (ties: lower index)
    pt = PartialTransport(cost, 24)
    for r in start.indices[:k0]:
        pt.add(int(r))
    prev = pt.fill_costs()
    while pt.size < 24:
        phi = pt.fill_costs()
        assert np.all(phi >= prev)  # prices only rise: a stale fill cost is a lower bound
        prev = phi
        phi = phi.copy()
        phi[pt.indices] = np.inf
        pt.add(int(np.argmin(phi)))
    np.testing.assert_array_equal(lazy, pt.indices)


def test_selector_records_the_counts_and_both_poos(tmp_path):
    te, ve, g = saturating(3)
    data = SelectionData(train_emb=te, valid_emb=ve, grad_norms=g)
    cost = poo_cost(te, ve, g, 0.5)
    k = greedy_select(cost, 24, saturation="index").positive_gain_picks
    sel = GORACS(budget=24, lam=0.5, max_iters=30, candidates=5).fit(data)
    info = sel.info_
    assert info["positive_gain_picks"] == k and info["capacity_picks"] == 24 - k
    assert sel.trace_[0] == info["poo_greedy"] and sel.trace_[-1] == sel.objective_
    assert info["poo_greedy"] == pytest.approx(
        poo_value(cost, greedy_init(cost, 24)), abs=1e-12)
    assert sel.objective_ == pytest.approx(poo_value(cost, sel.indices_), abs=1e-12)
    old = GORACS(budget=24, lam=0.5, max_iters=30, candidates=5, saturation="index").fit(data)
    assert old.info_["positive_gain_picks"] == k and old.info_["capacity_picks"] == 0
    assert info["poo_greedy"] < old.info_["poo_greedy"]
    greedy_only = GORACS(budget=24, lam=0.5, refine_steps=False).fit(data)
    assert greedy_only.objective_ == pytest.approx(info["poo_greedy"], abs=1e-12)
    with pytest.raises(GoracsError, match="saturation must be"):
        GORACS(budget=24, saturation="smallest")

    # by class: per-class counts and POOs, summed and weighted
    tl = np.random.default_rng(3).integers(0, 2, size=120)
    vl = np.array([0] * 30 + [1] * 18)
    labelled = SelectionData(train_emb=te, valid_emb=ve, grad_norms=g, train_labels=tl,
                             valid_labels=vl)
    by = GORACS(budget=16, lam=0.5, max_iters=10, candidates=4).fit(labelled).info_
    assert by["positive_gain_picks"] == sum(c["positive_gain_picks"]
                                            for c in by["classes"].values())
    assert by["poo_greedy"] == pytest.approx(sum(
        by["class_weights"][k] * c["poo_greedy"] for k, c in by["classes"].items()))

    # through the command: selection.json carries them, and --saturation index the old way
    arrays = {}
    for name, arr in (("train", te), ("valid", ve), ("grads", g)):
        arrays[name] = tmp_path / f"{name}.npy"
        np.save(arrays[name], arr)
    args = ["select", "--train-emb", str(arrays["train"]), "--valid-emb", str(arrays["valid"]),
            "--grad-norms", str(arrays["grads"]), "--budget", "24", "--lam", "0.5",
            "--max-iters", "30", "--candidates", "5"]
    for mode in ("capacity", "index"):
        out = tmp_path / mode
        assert main([*args, "--saturation", mode, "--out", str(out)]) == 0
        manifest = json.loads((out / "selection.json").read_text())
        assert manifest["params"]["saturation"] == mode
        assert manifest["positive_gain_picks"] == k
        assert manifest["capacity_picks"] == (24 - k if mode == "capacity" else 0)
        assert manifest["poo_greedy"] == manifest["trace"][0]
        assert manifest["poo"] == manifest["trace"][-1]
    old_json = json.loads((tmp_path / "index" / "selection.json").read_text())
    assert old_json["indices"] == old.indices_.tolist()
