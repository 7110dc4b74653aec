"""The GORACS engine against independent computations on small random instances."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linprog
from select_reference import impact_function, naive_greedy

from goracs.errors import GoracsError
from goracs.select import GORACS, SelectionData, class_budgets
from goracs.select.cost import pairwise_distances, poo_cost
from goracs.select.greedy import greedy_init, greedy_select, relaxed_objective
from goracs.select.marginal import _two_smallest, marginal_impact
from goracs.select.ot import exact_ot, poo_value
from goracs.select.refine import refine
from goracs.select.transport import TransportState


def lp_ot(cost: np.ndarray) -> float:
    """OT between uniform marginals as a plain linear program (HiGHS), independent of POT."""
    n, v = cost.shape
    a_eq = np.zeros((n + v, n * v))
    for i in range(n):
        a_eq[i, i * v:(i + 1) * v] = 1.0
    for j in range(v):
        a_eq[n + j, j::v] = 1.0
    b_eq = np.concatenate([np.full(n, 1.0 / n), np.full(v, 1.0 / v)])
    res = linprog(cost.ravel().astype(np.float64), A_eq=a_eq, b_eq=b_eq, bounds=(0, None),
                  method="highs", options={"primal_feasibility_tolerance": 1e-10,
                                           "dual_feasibility_tolerance": 1e-10})
    assert res.status == 0
    return float(res.fun)


def instance(seed: int, n_train: int = 60, n_valid: int = 24, dim: int = 5):
    rng = np.random.default_rng(seed)
    te = rng.normal(size=(n_train, dim)).astype(np.float32)
    ve = rng.normal(size=(n_valid, dim)).astype(np.float32)
    g = rng.uniform(1.0, 5.0, size=n_train).astype(np.float32)
    return te, ve, g


def test_cost_matches_the_formula():
    te, ve, g = instance(0)
    lam = 0.7
    c = poo_cost(te, ve, g, lam)
    d = np.sqrt(((te[:, None, :].astype(np.float64) - ve[None, :, :]) ** 2).sum(-1))
    raw = d / d.max() - lam * (g / g.max())[:, None]
    want = (raw - raw.min()) / (raw.max() - raw.min())
    assert c.dtype == np.float32
    np.testing.assert_allclose(c, want, atol=1e-6)
    assert c.min() == 0.0 and c.max() == pytest.approx(1.0, abs=1e-7)


def test_cost_blocks_do_not_change_the_result():
    te, ve, g = instance(1, n_train=37)
    whole = poo_cost(te, ve, g, 0.5)
    blocked = poo_cost(te, ve, g, 0.5, block_rows=5)
    np.testing.assert_array_equal(whole, blocked)
    np.testing.assert_allclose(pairwise_distances(te, ve, block_rows=4),
                               pairwise_distances(te, ve), atol=1e-6)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("shape", [(6, 24), (7, 24), (10, 15), (5, 11)])
def test_poo_equals_the_linear_program(seed, shape):
    rng = np.random.default_rng(seed)
    cost = rng.random((40, shape[1])).astype(np.float32)
    idx = rng.choice(40, size=shape[0], replace=False)
    want = lp_ot(cost[idx].astype(np.float64))
    assert abs(poo_value(cost, idx) - want) < 1e-9
    assert abs(TransportState(cost, idx).poo - want) < 1e-9


@pytest.mark.parametrize("n_sel,n_valid", [(6, 30), (8, 30), (7, 13), (12, 40)])
def test_exact_swaps_match_a_fresh_solve(n_sel, n_valid):
    """Re-optimisation after each exchange equals a from-scratch solve, also when V/n is not
    an integer (several units per column), and the kept duals stay optimal."""
    rng = np.random.default_rng(n_sel * 100 + n_valid)
    cost = rng.random((50, n_valid)).astype(np.float32)
    state = TransportState(cost, rng.choice(50, size=n_sel, replace=False))
    for _ in range(25):
        inside = set(state.indices.tolist())
        i = int(rng.choice(sorted(inside)))
        o = int(rng.choice([k for k in range(50) if k not in inside]))
        got = state.try_swap(i, o)
        new_set = np.array([k for k in state.indices.tolist() if k != i] + [o])
        assert abs(got - lp_ot(cost[new_set].astype(np.float64))) < 1e-9
        state.commit()
        rc = cost[state.indices].astype(np.float64) - state.flow.u[:, None] - state.flow.v
        plan = state.dense_plan()
        assert rc.min() > -1e-12
        assert np.abs(rc[plan > 0]).max() < 1e-12
        np.testing.assert_allclose(plan.sum(1), 1.0 / n_sel)
        np.testing.assert_allclose(plan.sum(0), 1.0 / n_valid)


def test_threshold_only_abandons_swaps_that_cannot_win():
    rng = np.random.default_rng(3)
    cost = rng.random((60, 30)).astype(np.float32)
    state = TransportState(cost, np.arange(6))
    for o in range(6, 60):
        full = state.try_swap(0, o)
        capped = state.try_swap(0, o, threshold=state.poo)
        if full < state.poo:
            assert capped == full
        else:
            assert capped == np.inf or capped == full


@pytest.mark.parametrize("seed", range(5))
def test_lazy_greedy_picks_what_the_naive_loop_picks(seed):
    rng = np.random.default_rng(seed)
    cost = rng.random((80, 30)).astype(np.float32)
    if seed == 4:  # ties: duplicated rows and a coarse grid of values
        cost = np.round(cost * 4) / 4
        cost[40:50] = cost[0:10]
    lazy = greedy_init(cost, 20, saturation="index")
    naive = naive_greedy(cost, 20)
    np.testing.assert_array_equal(lazy, naive)
    # the relaxed objective falls with every pick
    objs = [relaxed_objective(cost, lazy[:k]) for k in range(1, 21)]
    assert all(b <= a for a, b in zip(objs, objs[1:], strict=False))
    # past saturation (seed 4 saturates) the default differs, but only after the gains run out
    res = greedy_select(cost, 20)
    k = res.positive_gain_picks
    np.testing.assert_array_equal(res.indices[:k], naive[:k])
    assert (k < 20) == (seed == 4) and res.capacity_picks == 20 - k


def test_greedy_reference_stop_rule_gives_n_samples_with_mass():
    rng = np.random.default_rng(7)
    cost = rng.random((100, 40)).astype(np.float32)
    picks = greedy_init(cost, 15, stop="assigned")
    assert len(picks) == 15 == len(set(picks.tolist()))
    owners = np.argmin(cost[picks], axis=0)
    assert len(set(owners.tolist())) == 15  # every kept pick is some column's cheapest


@pytest.mark.parametrize("seed", range(4))
def test_marginal_impact_is_the_maximum_of_its_concave_function(seed):
    rng = np.random.default_rng(seed)
    n_sel, n_valid = (6, 23) if seed % 2 else (5, 25)
    cost = rng.random((30, n_valid)).astype(np.float32)
    idx = rng.choice(30, size=n_sel, replace=False)
    _, _, u, _ = exact_ot(cost[idx])
    got = marginal_impact(cost, idx, u)
    for i in range(30):
        others = [s for s in range(n_sel) if idx[s] != i]
        f = np.min(cost[idx[others]].astype(np.float64) - u[others, None], axis=0)
        d = cost[i].astype(np.float64) - f
        grid = np.linspace(d.min() - 0.5, d.max() + 0.5, 40001)
        best = impact_function(d, grid, n_sel).max()
        assert got[i] >= best - 1e-12  # the closed form is at least every grid value...
        kinks = impact_function(d, d, n_sel).max()  # ...and the maximum sits on a kink
        assert abs(got[i] - kinks) < 1e-12
        assert got[i] - best < 1e-3


def test_two_smallest_per_column():
    rng = np.random.default_rng(0)
    cost = rng.random((20, 300)).astype(np.float32)  # spans several column blocks
    idx = np.array([3, 5, 7, 11])
    x = rng.random(4)
    b1, b2, a1 = _two_smallest(cost, idx, x)
    vals = cost[idx].astype(np.float64) - x[:, None]
    srt = np.sort(vals, axis=0)
    np.testing.assert_array_equal(b1, srt[0])
    np.testing.assert_array_equal(b2, srt[1])
    np.testing.assert_array_equal(a1, np.argmin(vals, axis=0))


@pytest.mark.parametrize("swaps_per_round", [None, 1])
def test_refinement_never_raises_poo(swaps_per_round):
    te, ve, g = instance(11, n_train=200, n_valid=60)
    cost = poo_cost(te, ve, g, 0.5)
    init = greedy_init(cost, 12)
    res = refine(cost, init, candidates=8, max_iters=None, swaps_per_round=swaps_per_round)
    assert all(b < a for a, b in zip(res.trace, res.trace[1:], strict=False))
    assert res.poo <= res.trace[0]
    assert res.n_accepted == len(res.trace) - 1 > 0
    assert abs(res.poo - lp_ot(cost[res.indices].astype(np.float64))) < 1e-9
    assert 0.0 <= res.pass_at_1 <= 1.0


def test_goracs_selector_result_and_determinism():
    te, ve, g = instance(5, n_train=150, n_valid=40)
    data = SelectionData(train_emb=te, valid_emb=ve, grad_norms=g)
    a = GORACS(budget=10, lam=0.5, max_iters=30, candidates=5).fit(data).result()
    b = GORACS(budget=10, lam=0.5, max_iters=30, candidates=5).fit(data).result()
    np.testing.assert_array_equal(a.indices, b.indices)
    assert a.trace == b.trace
    assert len(a.indices) == 10 == len(set(a.indices.tolist()))
    assert a.poo == pytest.approx(poo_value(poo_cost(te, ve, g, 0.5), a.indices), abs=1e-12)
    assert a.trace[0] == pytest.approx(a.info["poo_greedy"]) and a.trace[-1] == a.poo
    assert {"cost", "greedy", "exact_ot", "refine", "total"} <= set(a.seconds)
    greedy_only = GORACS(budget=10, lam=0.5, refine_steps=False).fit(data).result()
    assert greedy_only.poo >= a.poo


def test_class_budgets_sum_to_n():
    labels = np.array([0] * 52 + [1] * 47 + [2] * 1)
    for n in (1, 2, 3, 10, 64, 99):
        b = class_budgets(labels, n)
        assert sum(b.values()) == n
        for k, count in zip((0, 1, 2), (52, 47, 1), strict=True):
            assert abs(b[k] - n * count / 100) < 1
    assert class_budgets(np.array([0, 0, 1, 1]), 3) == {0: 2, 1: 1}  # ties: smaller label


def test_label_enhanced_selection_respects_class_budgets():
    te, ve, g = instance(9, n_train=120, n_valid=50)
    rng = np.random.default_rng(9)
    tl = rng.integers(0, 3, size=120)
    vl = np.array([0] * 20 + [1] * 20 + [2] * 10)
    data = SelectionData(train_emb=te, valid_emb=ve, grad_norms=g, train_labels=tl,
                         valid_labels=vl)
    sel = GORACS(budget=10, lam=0.5, max_iters=20, candidates=4).fit(data)
    picked = tl[sel.indices_]
    assert [int((picked == k).sum()) for k in range(3)] == [4, 4, 2]
    per = sel.info_["classes"]
    weighted = sum(sel.info_["class_weights"][k] * per[k]["poo"] for k in per)
    assert sel.objective_ == pytest.approx(weighted)
    assert sel.trace_[-1] == pytest.approx(sel.objective_)
    for k in per:  # each class's POO is the exact OT within that class
        rows = np.flatnonzero(tl == int(k))
        cols = np.flatnonzero(vl == int(k))
        chosen = np.flatnonzero(np.isin(rows, sel.indices_))
        cost = poo_cost(te[rows], ve[cols], g[rows], 0.5)
        assert per[k]["poo"] == pytest.approx(poo_value(cost, chosen), abs=1e-12)


def test_per_class_false_ignores_the_labels():
    te, ve, g = instance(9, n_train=120, n_valid=50)
    tl = np.random.default_rng(9).integers(0, 2, size=120)
    vl = np.array([0] * 40 + [1] * 10)
    labelled = SelectionData(train_emb=te, valid_emb=ve, grad_norms=g, train_labels=tl,
                             valid_labels=vl)
    pooled = GORACS(budget=10, lam=0.5, max_iters=20, candidates=4, per_class=False)
    plain = GORACS(budget=10, lam=0.5, max_iters=20, candidates=4)
    a = pooled.fit(labelled)
    b = plain.fit(SelectionData(train_emb=te, valid_emb=ve, grad_norms=g))
    np.testing.assert_array_equal(a.indices_, b.indices_)
    assert a.objective_ == b.objective_ and "classes" not in a.info_
    by_class = GORACS(budget=10, lam=0.5, max_iters=20, candidates=4).fit(labelled)
    assert [int((tl[by_class.indices_] == k).sum()) for k in (0, 1)] == [8, 2]
    with pytest.raises(GoracsError, match="per-class"):
        GORACS(budget=10, per_class="no")


@pytest.mark.parametrize("kwargs,message", [
    ({"lam": -1.0}, "lambda must be"), ({"lam": float("nan")}, "lambda must be"),
    ({"lam": "0.5"}, "lambda must be"), ({"candidates": 0}, "candidates must be"),
    ({"candidates": 2.5}, "candidates must be"), ({"patience": 0}, "patience must be"),
    ({"medoid_rounds": -1}, "medoid-rounds must be"), ({"max_iters": -1}, "max-iters must be"),
    ({"swaps_per_round": 0}, "swaps-per-round must be"), ({"tol": 1.0}, "tol must be"),
    ({"time_limit": 0}, "time-limit must be"), ({"init_stop": "never"}, "init-stop must be"),
    ({"refine_steps": 1}, "refine-steps must be"), ({"per_class": 1}, "per-class must be"),
    ({"saturation": "oldest"}, "saturation must be"),
])
def test_goracs_settings_fail_at_construction(kwargs, message):
    with pytest.raises(GoracsError, match=message):
        GORACS(budget=10, **kwargs)
    GORACS(budget=10)           # the defaults pass


def test_ablations():
    te, ve, g = instance(21, n_train=150, n_valid=40)
    data = SelectionData(train_emb=te, valid_emb=ve, grad_norms=g)
    from goracs.select import get_selector

    nograd = get_selector("goracs-nograd")(budget=10, max_iters=20, candidates=5).fit(data)
    plain = GORACS(budget=10, lam=0.0, max_iters=20, candidates=5).fit(data)
    np.testing.assert_array_equal(nograd.indices_, plain.indices_)
    assert nograd.get_params()["lam"] == 0.0

    greedy = get_selector("goracs-greedy")(budget=10, lam=0.5).fit(data)
    np.testing.assert_array_equal(greedy.indices_,
                                  np.sort(greedy_init(poo_cost(te, ve, g, 0.5), 10)))
    assert greedy.trace_ == [greedy.objective_]

    indiv = get_selector("goracs-individual")(budget=10, lam=0.5).fit(data)
    own = poo_cost(te, ve, g, 0.5).mean(axis=1, dtype=np.float64)
    np.testing.assert_array_equal(indiv.indices_, np.sort(np.argsort(own, kind="stable")[:10]))
    full = GORACS(budget=10, lam=0.5, max_iters=None, candidates=8).fit(data)
    assert full.objective_ <= greedy.objective_ and full.objective_ < indiv.objective_


def test_medoid_rounds_lower_poo_exactly():
    from goracs.select.medoid import _slot_costs, alternate

    te, ve, g = instance(13, n_train=300, n_valid=60)
    cost = poo_cost(te, ve, g, 0.5)
    state = TransportState(cost, np.arange(12))  # a poor start, so that slots have moves
    plan = state.dense_plan()
    f = state.flow
    per_unit = _slot_costs(cost, f.col_slot, f.col_flow, f.col_deg, 12, state.p)
    want = cost.astype(np.float64) @ (plan * 12).T  # row i shipping slot s's plan, per unit
    np.testing.assert_allclose(per_unit, want, rtol=1e-6)
    start = state.poo
    res = alternate(cost, state, max_rounds=10, tol=0.0)
    assert res.trace and res.trace[0] < start
    assert all(b < a for a, b in zip(res.trace, res.trace[1:], strict=False))
    assert abs(res.state.poo - lp_ot(cost[res.state.indices].astype(np.float64))) < 1e-9
    assert len(set(res.state.indices.tolist())) == 12


def test_patience_ends_refinement_after_failures_in_a_row():
    te, ve, g = instance(17, n_train=200, n_valid=60)
    cost = poo_cost(te, ve, g, 0.5)
    init = greedy_init(cost, 12)
    full = refine(cost, init, candidates=8, max_iters=None)
    short = refine(cost, init, candidates=8, max_iters=None, patience=1)
    assert short.n_trials - short.n_accepted <= 1
    assert short.trace == full.trace[: len(short.trace)]
    assert short.n_trials <= full.n_trials
