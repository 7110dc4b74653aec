"""The selection baselines on small arrays: contract, determinism, each method's own property."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist

import goracs.select.baselines  # noqa: F401  (registers the baselines)
from goracs.errors import GoracsError
from goracs.select import SelectionData, get_selector
from goracs.select.baselines.geometry import kmeans, knn
from goracs.select.baselines.importance import _reverse_select, symmetric_knn_graph
from goracs.select.baselines.strata import (
    coverage_allocation,
    proportional_allocation,
    score_strata,
)

ALL = ["random", "kcenter", "herding", "stratified", "grand", "el2n", "ccs", "d2pruning",
       "dealrec"]
RANDOMISED = ["random", "kcenter", "stratified", "ccs", "dealrec"]
DETERMINISTIC = ["herding", "grand", "el2n", "d2pruning"]
N = 300


@pytest.fixture(scope="module")
def data() -> SelectionData:
    rng = np.random.default_rng(7)
    # Three blobs of unequal size, so clusters, strata and densities differ.
    centres = rng.normal(scale=4.0, size=(3, 8))
    which = rng.choice(3, size=N, p=[0.5, 0.3, 0.2])
    emb = (centres[which] + rng.normal(size=(N, 8))).astype(np.float32)
    return SelectionData(
        train_emb=emb,
        grad_norms=rng.gamma(2.0, size=N),
        scores={"el2n": rng.random(N), "influence": rng.normal(size=N)},
    )


def select(name: str, data: SelectionData, budget: int, seed: int = 0, **kw) -> np.ndarray:
    return get_selector(name)(budget, seed=seed, **kw).fit(data).indices_


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("budget", [1, 17, 64])
def test_budget_met_with_distinct_indices(name: str, budget: int, data: SelectionData) -> None:
    idx = select(name, data, budget)
    assert idx.shape == (budget,)
    assert len(np.unique(idx)) == budget
    assert idx.min() >= 0 and idx.max() < N


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_indices(name: str, data: SelectionData) -> None:
    a = get_selector(name)(40, seed=3).fit(data)
    b = get_selector(name)(40, seed=3).fit(data)
    np.testing.assert_array_equal(a.indices_, b.indices_)
    assert a.result().to_json()["params"] == b.result().to_json()["params"]


@pytest.mark.parametrize("name", RANDOMISED)
def test_seeds_differ_where_random(name: str, data: SelectionData) -> None:
    draws = {tuple(select(name, data, 40, seed=s)) for s in range(4)}
    assert len(draws) > 1


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_seed_free_methods_ignore_the_seed(name: str, data: SelectionData) -> None:
    np.testing.assert_array_equal(select(name, data, 40, seed=0), select(name, data, 40, seed=9))


def covering_radius(emb: np.ndarray, idx: np.ndarray) -> float:
    return float(cdist(emb, emb[idx]).min(axis=1).max())


def test_kcenter_radius_never_grows_with_budget(data: SelectionData) -> None:
    emb = data.train_emb.astype(np.float64)
    radii = []
    for n in range(1, 41):
        sel = get_selector("kcenter")(n, seed=5).fit(data)
        r = covering_radius(emb, sel.indices_)
        assert sel.info_["covering_radius"] == pytest.approx(r, rel=1e-9)
        radii.append(r)
    assert (np.diff(radii) <= 0).all()
    assert radii[-1] < 0.5 * radii[0]


def test_kcenter_covers_better_than_random(data: SelectionData) -> None:
    emb = data.train_emb.astype(np.float64)
    r_kc = covering_radius(emb, select("kcenter", data, 30))
    r_rand = [covering_radius(emb, select("random", data, 30, seed=s)) for s in range(20)]
    assert r_kc < min(r_rand)


def test_herding_mean_approaches_pool_mean(data: SelectionData) -> None:
    emb = data.train_emb.astype(np.float64)
    mu = emb.mean(axis=0)

    def gap(idx: np.ndarray) -> float:
        return float(np.linalg.norm(emb[idx].mean(axis=0) - mu))

    gaps = [gap(select("herding", data, n)) for n in (2, 8, 32, 64)]
    assert (np.diff(gaps) < 0).all()
    # Herding's error falls like 1/n, a random subset's like 1/sqrt(n): at n = 32 it beats the
    # best of 30 random draws by a wide margin.
    rand = [gap(select("random", data, 32, seed=s)) for s in range(30)]
    assert gaps[2] < 0.5 * min(rand)
    sel = get_selector("herding")(64).fit(data)
    assert sel.info_["mean_gap"] == pytest.approx(gaps[3], rel=1e-9)


def test_proportional_allocation_hand_worked() -> None:
    # Quotas 3.5, 2.1, 1.4: floors 3, 2, 1, the spare unit to the largest remainder.
    np.testing.assert_array_equal(proportional_allocation(np.array([50, 30, 20]), 7), [4, 2, 1])
    # Equal remainders: the larger stratum first, then the lower index.
    np.testing.assert_array_equal(proportional_allocation(np.array([1, 3]), 2), [0, 2])
    np.testing.assert_array_equal(proportional_allocation(np.array([2, 4, 2]), 2), [1, 1, 0])
    np.testing.assert_array_equal(proportional_allocation(np.array([5, 0, 5]), 10), [5, 0, 5])


@pytest.mark.parametrize("n", [1, 7, 33, 150, 299])
def test_proportional_allocation_sums_and_tracks_sizes(n: int) -> None:
    sizes = np.array([120, 1, 77, 40, 62])
    alloc = proportional_allocation(sizes, n)
    assert alloc.sum() == n
    assert (alloc <= sizes).all()
    assert np.abs(alloc - n * sizes / sizes.sum()).max() < 1


def test_stratified_follows_cluster_sizes(data: SelectionData) -> None:
    sel = get_selector("stratified")(45, seed=2, n_clusters=6).fit(data)
    sizes = np.bincount(sel.labels_, minlength=6)
    alloc = proportional_allocation(sizes, 45)
    assert sel.info_["cluster_sizes"] == sizes.tolist()
    assert sel.info_["allocation"] == alloc.tolist()
    np.testing.assert_array_equal(np.bincount(sel.labels_[sel.indices_], minlength=6), alloc)
    assert (sizes > 0).all()


def test_kmeans_recovers_separated_blobs() -> None:
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(4), [40, 25, 10, 5])
    x = 20.0 * np.eye(4, 3)[truth] + rng.normal(scale=0.1, size=(80, 3))
    labels, centres = kmeans(x, 4, seed=1)
    # Same partition up to renaming: each true blob maps to exactly one cluster and back.
    pairs = {(int(t), int(c)) for t, c in zip(truth, labels, strict=True)}
    assert len(pairs) == 4 and len({c for _, c in pairs}) == 4
    for t, c in pairs:
        np.testing.assert_allclose(centres[c], x[truth == t].mean(axis=0))


def test_kmeans_keeps_every_cluster_with_duplicates() -> None:
    x = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0]]), 10, axis=0)
    labels, _ = kmeans(x, 5, seed=0)
    assert (np.bincount(labels, minlength=5) > 0).all()


def test_grand_picks_exactly_the_top_gradient_norms(data: SelectionData) -> None:
    idx = select("grand", data, 25)
    expected = np.argsort(-data.grad_norms)[:25]
    np.testing.assert_array_equal(idx, np.sort(expected))
    assert data.grad_norms[idx].min() > np.delete(data.grad_norms, idx).max()


def test_grand_breaks_ties_by_index() -> None:
    d = SelectionData(grad_norms=np.array([1.0, 3.0, 2.0, 3.0, 2.0, 2.0]))
    np.testing.assert_array_equal(select("grand", d, 3), [1, 2, 3])


def test_el2n_picks_the_top_el2n_scores(data: SelectionData) -> None:
    idx = select("el2n", data, 25)
    np.testing.assert_array_equal(idx, np.sort(np.argsort(-data.scores["el2n"])[:25]))


def test_coverage_allocation_hand_worked() -> None:
    # Smallest first: 1 (whole), then 3 (whole, share 4), then the 5 left.
    np.testing.assert_array_equal(coverage_allocation(np.array([10, 1, 3]), 9), [5, 1, 3])
    np.testing.assert_array_equal(coverage_allocation(np.array([0, 4, 4]), 5), [0, 2, 3])


@pytest.mark.parametrize("n", [1, 5, 50, 299])
def test_coverage_allocation_sums_exactly(n: int) -> None:
    sizes = np.array([0, 3, 1, 200, 17, 78])
    alloc = coverage_allocation(sizes, n)
    assert alloc.sum() == n and (alloc <= sizes).all()


def test_ccs_prunes_hardest_and_covers_every_stratum(data: SelectionData) -> None:
    beta, strata, budget = 0.2, 12, 48
    sel = get_selector("ccs")(budget, seed=1, beta=beta, n_strata=strata).fit(data)
    g = data.grad_norms
    n_pruned = math.floor(beta * N)
    hardest = np.argsort(-g)[:n_pruned]
    assert sel.info_["pruned"] == n_pruned
    assert not np.isin(sel.indices_, hardest).any()
    kept = np.setdiff1d(np.arange(N), hardest)
    # Strata recomputed here: equal-width bins over the kept samples' score range.
    ids = score_strata(g[kept], strata)
    np.testing.assert_array_equal(sel.strata_[kept], ids)
    assert (sel.strata_[hardest] == -1).all()
    nonempty = np.unique(ids)
    drawn = np.unique(sel.strata_[sel.indices_])
    np.testing.assert_array_equal(drawn, nonempty)
    # Sparse (hard-tail) strata are taken whole.
    sizes = np.bincount(ids, minlength=strata)
    picks = np.bincount(sel.strata_[sel.indices_], minlength=strata)
    assert ((picks == sizes) | (picks >= budget // len(nonempty))).all()


def test_ccs_reads_a_named_score(data: SelectionData) -> None:
    sel = get_selector("ccs")(30, beta=0.5, score="scores.el2n").fit(data)
    assert data.scores["el2n"][sel.indices_].max() <= np.median(data.scores["el2n"]) + 1e-12
    assert sel.requires == ("scores.el2n",)


def test_ccs_budget_beyond_pruned_pool_is_an_error(data: SelectionData) -> None:
    with pytest.raises(GoracsError, match="after pruning"):
        get_selector("ccs")(250, beta=0.2).fit(data)


def test_knn_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(120, 5))
    x[7] = x[3]  # a duplicate: distance 0, still a neighbour, never itself
    nbrs, dists = knn(x, 6)
    full = cdist(x, x)
    np.fill_diagonal(full, np.inf)
    ref = np.argsort(full, axis=1, kind="stable")[:, :6]
    np.testing.assert_array_equal(nbrs, ref)
    np.testing.assert_allclose(dists, np.take_along_axis(full, ref, axis=1), atol=1e-12)
    assert nbrs[3, 0] == 7 and nbrs[7, 0] == 3


def test_symmetric_knn_graph_links_both_ways() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(50, 3))
    nbrs, dists = knn(x, 3)
    indptr, cols, dist = symmetric_knn_graph(nbrs, dists)
    edges = {(u, int(v)) for u in range(50) for v in cols[indptr[u]:indptr[u + 1]]}
    assert all((v, u) in edges for u, v in edges)
    assert all((u, int(v)) in edges for u in range(50) for v in nbrs[u])
    assert len(edges) == len(cols)
    full = cdist(x, x)
    rows = np.repeat(np.arange(50), np.diff(indptr))
    np.testing.assert_allclose(dist, full[rows, cols], atol=1e-12)


def test_reverse_selection_matches_the_plain_greedy_loop() -> None:
    # The lazy heap must pick exactly what argmax-then-update over all nodes picks.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, 4))
    indptr, cols, dist = symmetric_knn_graph(*knn(x, 6))
    weight = np.exp(-0.7 * dist)
    start = rng.gamma(2.0, size=200)
    fast = _reverse_select(start.copy(), indptr, cols, weight, 60)
    score, taken, slow = start.copy(), np.zeros(200, dtype=bool), []
    for _ in range(60):
        u = int(np.argmax(np.where(taken, -np.inf, score)))
        taken[u] = True
        slow.append(u)
        v = cols[indptr[u]:indptr[u + 1]]
        w = weight[indptr[u]:indptr[u + 1]]
        score[v[~taken[v]]] -= w[~taken[v]] * score[u]
    np.testing.assert_array_equal(fast, slow)


def dense_and_sparse() -> tuple[SelectionData, np.ndarray]:
    """Six near-identical hard samples (a dense cluster) and ten isolated, slightly easier ones."""
    rng = np.random.default_rng(0)
    dense = rng.normal(scale=0.01, size=(6, 2))
    sparse = np.stack([np.arange(1, 11) * 10.0, np.full(10, 10.0)], axis=1)
    emb = np.concatenate([dense, sparse])
    grad = np.concatenate([np.full(6, 1.0), np.full(10, 0.9)])
    return SelectionData(train_emb=emb, grad_norms=grad), np.arange(6)


def test_d2pruning_defers_a_dense_clusters_second_pick() -> None:
    data, dense = dense_and_sparse()
    sel = get_selector("d2pruning")(2, n_neighbors=5).fit(data)
    # Forward passing makes the dense cluster's members the two top scores...
    assert set(np.argsort(-sel.forward_scores_)[:2]) <= set(dense)
    # ...but once one is picked, reverse passing lowers its neighbours below the isolated ones.
    assert np.isin(sel.indices_, dense).sum() == 1
    rest = np.setdiff1d(dense, sel.indices_)
    assert (sel.scores_[rest] < sel.forward_scores_[rest] - 5.0).all()
    assert (sel.scores_[rest] < 0.9).all()
    # Without the reverse pass (weights exp(-gamma_r d) ~ 0) both picks stay in the cluster.
    off = get_selector("d2pruning")(2, n_neighbors=5, gamma_r=1e6).fit(data)
    assert np.isin(off.indices_, dense).all()


def test_d2pruning_forward_pass_rewards_dense_difficult_regions() -> None:
    data, dense = dense_and_sparse()
    sel = get_selector("d2pruning")(1, n_neighbors=5).fit(data)
    assert sel.forward_scores_[dense].min() > 5.0 * sel.forward_scores_[6:].max()


def test_dealrec_covers_every_score_group(data: SelectionData) -> None:
    groups, lam = 10, 0.5
    sel = get_selector("dealrec")(40, seed=4, lam=lam, n_groups=groups).fit(data)

    def minmax(v: np.ndarray) -> np.ndarray:
        return (v - v.min()) / (v.max() - v.min())

    overall = minmax(data.scores["influence"]) + lam * minmax(data.grad_norms)
    ids = score_strata(overall, groups)
    np.testing.assert_array_equal(sel.strata_, ids)
    np.testing.assert_array_equal(np.unique(ids[sel.indices_]), np.unique(ids))
    assert sel.info_["groups_drawn"] == sel.info_["groups_nonempty"] == len(np.unique(ids))


def test_dealrec_effort_weight_changes_the_groups(data: SelectionData) -> None:
    a = get_selector("dealrec")(40, lam=0.0).fit(data)
    b = get_selector("dealrec")(40, lam=2.0).fit(data)
    assert not np.array_equal(a.strata_, b.strata_)
    np.testing.assert_array_equal(a.strata_, score_strata(data.scores["influence"], 50))


@pytest.mark.parametrize("name,missing", [
    ("random", "nothing"),
    ("kcenter", "train_emb"),
    ("herding", "train_emb"),
    ("stratified", "train_emb"),
    ("grand", "grad_norms"),
    ("el2n", "el2n"),
    ("ccs", "grad_norms"),
    ("d2pruning", "train_emb"),
    ("d2pruning", "grad_norms"),
    ("dealrec", "influence"),
    ("dealrec", "grad_norms"),
])
def test_missing_inputs_raise(name: str, missing: str, data: SelectionData) -> None:
    if missing == "nothing":
        partial = SelectionData()
    else:
        partial = SelectionData(
            train_emb=None if missing == "train_emb" else data.train_emb,
            grad_norms=None if missing == "grad_norms" else data.grad_norms,
            scores={k: v for k, v in data.scores.items() if k != missing},
        )
    with pytest.raises(GoracsError):
        get_selector(name)(10).fit(partial)


@pytest.mark.parametrize("name,kw", [
    ("ccs", {"beta": 1.0}),
    ("ccs", {"n_strata": 0}),
    ("ccs", {"score": "el2n"}),
    ("stratified", {"n_clusters": 2.5}),
    ("d2pruning", {"gamma_f": -1.0}),
    ("d2pruning", {"n_neighbors": True}),
    ("d2pruning", {"difficulty": "scores."}),
    ("dealrec", {"lam": float("nan")}),
    ("dealrec", {"effort": 3}),
])
def test_bad_hyper_parameters_raise(name: str, kw: dict) -> None:
    with pytest.raises(GoracsError):
        get_selector(name)(10, **kw)


def test_score_must_be_one_dimensional(data: SelectionData) -> None:
    bad = SelectionData(grad_norms=data.grad_norms,
                        scores={"el2n": np.ones((N, 2)), "influence": data.scores["influence"]})
    with pytest.raises(GoracsError, match="1-D"):
        get_selector("el2n")(10).fit(bad)
