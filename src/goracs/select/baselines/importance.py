"""Importance-based baselines: they rank or stratify samples by a per-sample score.

Scores follow one convention: higher means harder (larger gradient norm, larger error), and
"hard pruning" removes the highest. A score source is ``grad_norms`` or ``scores.<name>``
(an entry of :attr:`SelectionData.scores`); a selector that reads a configurable source
derives ``requires`` from it (a property), so :meth:`Selector.fit` checks the right input.
"""

from __future__ import annotations

import heapq
import math
from typing import Any

import numpy as np

from goracs.errors import GoracsError
from goracs.select.base import SelectionData, Selector, register
from goracs.select.baselines.geometry import as_points, knn, progress_bar
from goracs.select.baselines.strata import coverage_allocation, draw_within, score_strata
from goracs.select.params import check_int, check_real, check_source, score_from


def top_scores(score: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest scores; ties go to the lower index."""
    order = np.lexsort((np.arange(score.shape[0]), -score))
    return order[:n]


@register
class GraNd(Selector):
    """GraNd (Paul et al., NeurIPS 2021): the samples with the largest gradient norms.

    Keeps the top ``budget`` of ``grad_norms`` (per-sample norms of the loss gradient, here
    taken on the LLM's LoRA block). Deterministic; ties go to the lower index.
    """

    name = "grand"
    requires = ("grad_norms",)

    def _select(self, data: SelectionData) -> None:
        with self._stage("rank"):
            self.indices_ = top_scores(score_from(data, "grad_norms"), self.budget)


@register
class EL2N(Selector):
    """EL2N (Paul et al., NeurIPS 2021): the samples with the largest error L2 norm.

    Keeps the top ``budget`` of ``scores["el2n"]``, the L2 norm of the model's output
    distribution minus the one-hot target. ``goracs features`` computes it from the LLM
    (``features/el2n.npy``: the mean over the response tokens of
    ||softmax(logits_t) - onehot(y_t)||_2 under the gradient norms' scoring model, see
    :mod:`goracs.features.gradnorms`) and ``goracs select --data`` loads it; ``--score
    el2n=FILE`` gives any other. Deterministic; ties go to the lower index.
    """

    name = "el2n"
    requires = ("scores.el2n",)

    def _select(self, data: SelectionData) -> None:
        with self._stage("rank"):
            self.indices_ = top_scores(score_from(data, "scores.el2n"), self.budget)


def coverage_stratified(score: np.ndarray, n: int, n_strata: int, prune: float,
                        rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coverage-centric stratified sampling: prune the hardest share, then stratify by score.

    Parameters
    ----------
    score : (N,) difficulty, higher = harder.
    n : budget.
    n_strata : number of equal-width score strata over the kept samples' range.
    prune : share of the pool removed first, the floor(prune * N) highest scores.
    rng : generator of the within-stratum draws.

    Returns
    -------
    indices : (n,) selected samples.
    strata : (N,) stratum of every sample, -1 for the pruned ones.
    budgets : (n_strata,) samples drawn from each stratum (:func:`coverage_allocation`).
    """
    total = score.shape[0]
    n_pruned = math.floor(prune * total)
    kept = np.sort(top_scores(score, total)[n_pruned:])
    if n > kept.shape[0]:
        raise GoracsError(f"budget {n} exceeds the {kept.shape[0]} samples left after pruning "
                          f"the hardest {prune:g} of the pool")
    ids = score_strata(score[kept], n_strata)
    budgets = coverage_allocation(np.bincount(ids, minlength=n_strata), n)
    strata = np.full(total, -1, dtype=np.int64)
    strata[kept] = ids
    return kept[draw_within(ids, budgets, rng)], strata, budgets


@register
class CCS(Selector):
    """CCS (Zheng et al., ICLR 2023): coverage-centric stratified sampling over a difficulty score.

    Removes the hardest ``beta`` share of the pool (highest ``score``), splits the rest into
    ``n_strata`` equal-width score strata, and walks them from the smallest up, each taking
    min(its size, an even share of the budget left), drawn uniformly with ``seed``. Small
    strata are kept whole, so easy, medium and hard regions are all covered. ``score`` is
    ``grad_norms`` (default) or ``scores.<name>``. ``strata_`` holds every sample's stratum
    (-1 = pruned).
    """

    name = "ccs"

    def __init__(self, budget: int, seed: int = 0, beta: float = 0.1, n_strata: int = 50,
                 score: str = "grad_norms") -> None:
        super().__init__(budget, seed)
        self.beta = beta
        self.n_strata = n_strata
        self.score = score
        self._validate_params()

    @property
    def requires(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.score,)

    def _validate_params(self) -> dict[str, Any]:
        return {"beta": check_real("beta", self.beta, 0.0, 1.0, high_open=True),
                "n_strata": check_int("n_strata", self.n_strata),
                "score": check_source("score", self.score)}

    def _select(self, data: SelectionData) -> None:
        p = self.params_
        with self._stage("stratify"):
            rng = np.random.default_rng(self.seed)
            idx, self.strata_, budgets = coverage_stratified(
                score_from(data, p["score"]), self.budget, p["n_strata"], p["beta"], rng)
        self.indices_ = idx
        self.info_["pruned"] = int(np.count_nonzero(self.strata_ < 0))
        self.info_["strata_sizes"] = [int(c) for c in
                                      np.bincount(self.strata_[self.strata_ >= 0],
                                                  minlength=p["n_strata"])]
        self.info_["strata_budgets"] = [int(b) for b in budgets]


def symmetric_knn_graph(nbrs: np.ndarray, dists: np.ndarray) -> tuple[np.ndarray, ...]:
    """Undirected k-NN graph in CSR form: u and v are linked if either is among the other's k.

    Returns
    -------
    indptr : (N + 1,) row offsets; row u's edges are ``indptr[u]:indptr[u + 1]``.
    cols : neighbour of each edge, ascending within a row.
    dist : Euclidean length of each edge.
    """
    n, k = nbrs.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    r = np.concatenate((rows, nbrs.ravel()))
    c = np.concatenate((nbrs.ravel(), rows))
    d = np.concatenate((dists.ravel(), dists.ravel()))
    # An edge found from both ends appears twice with the same length; keep one.
    _, first = np.unique(r * n + c, return_index=True)
    r, c, d = r[first], c[first], d[first]
    indptr = np.concatenate(([0], np.cumsum(np.bincount(r, minlength=n))))
    return indptr, c, d


@register
class D2Pruning(Selector):
    """D2-Pruning (Maharana et al., ICLR 2024): message passing on a k-NN graph, then selection.

    Builds the (symmetrised) k-nearest-neighbour graph of the training embeddings. Forward
    message passing gives every node s(u) + sum_{v in N(u)} exp(-gamma_f d(u, v)) s(v), so a
    difficult sample in a dense, difficult region scores high. Selection then repeatedly takes
    the highest-scoring node u and lowers each unselected neighbour v by
    exp(-gamma_r d(u, v)) s(u) (reverse message passing), deferring the rest of a region
    already represented. Difficulty is ``grad_norms`` (default) or ``scores.<name>``.
    ``forward_scores_`` and ``scores_`` hold the scores after the forward pass and at the end.
    """

    name = "d2pruning"

    def __init__(self, budget: int, seed: int = 0, n_neighbors: int = 10, gamma_f: float = 1.0,
                 gamma_r: float = 1.0, difficulty: str = "grad_norms") -> None:
        super().__init__(budget, seed)
        self.n_neighbors = n_neighbors
        self.gamma_f = gamma_f
        self.gamma_r = gamma_r
        self.difficulty = difficulty
        self._validate_params()

    @property
    def requires(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("train_emb", self.difficulty)

    def _validate_params(self) -> dict[str, Any]:
        return {"n_neighbors": check_int("n_neighbors", self.n_neighbors),
                "gamma_f": check_real("gamma_f", self.gamma_f),
                "gamma_r": check_real("gamma_r", self.gamma_r),
                "difficulty": check_source("difficulty", self.difficulty)}

    def _select(self, data: SelectionData) -> None:
        p = self.params_
        s0 = score_from(data, p["difficulty"])
        x = as_points(data.train_emb)
        n_pool = x.shape[0]
        with self._stage("knn"):
            nbrs, dists = knn(x, min(p["n_neighbors"], n_pool - 1))
            indptr, cols, dist = symmetric_knn_graph(nbrs, dists)
            rows = np.repeat(np.arange(n_pool), np.diff(indptr))
        with self._stage("forward"):
            msg = np.exp(-p["gamma_f"] * dist) * s0[cols]
            score = s0 + np.bincount(rows, weights=msg, minlength=n_pool)
        self.forward_scores_ = score.copy()
        with self._stage("select"):
            w_rev = np.exp(-p["gamma_r"] * dist)
            self.indices_ = _reverse_select(score, indptr, cols, w_rev, self.budget)
        self.scores_ = score


def _reverse_select(score: np.ndarray, indptr: np.ndarray, cols: np.ndarray,
                    weight: np.ndarray, n: int) -> np.ndarray:
    """Greedy max-score picks with reverse message passing; updates ``score`` in place.

    A heap of (-score, index) entries with lazy deletion: every change pushes a fresh entry
    and stale ones are skipped when popped, so each pick costs O(degree log N) instead of a
    pass over the pool. Ties go to the lower index.
    """
    heap = [(-float(v), i) for i, v in enumerate(score)]
    heapq.heapify(heap)
    taken = np.zeros(score.shape[0], dtype=bool)
    chosen = np.empty(n, dtype=np.int64)
    t = 0
    bar = progress_bar(n, "d2-pruning")
    while t < n:
        neg, u = heapq.heappop(heap)
        if taken[u] or -neg != score[u]:
            continue
        taken[u] = True
        chosen[t] = u
        t += 1
        bar.update()
        lo, hi = indptr[u], indptr[u + 1]
        v = cols[lo:hi]
        open_ = ~taken[v]
        v = v[open_]
        score[v] -= weight[lo:hi][open_] * score[u]
        for j in v.tolist():
            heapq.heappush(heap, (-float(score[j]), j))
    bar.close()
    return chosen


@register
class DEALRec(Selector):
    """DEALRec (Lin et al., SIGIR 2024): influence plus effort score, coverage-stratified.

    Overall score = minmax(influence) + lam * minmax(effort), where the influence score comes
    from a surrogate model (``scores.influence`` by default) and the effort score is the
    LLM's per-sample gradient norm (``grad_norms`` by default). ``goracs features`` writes
    ``features/influence.npy`` with the scoring LLM as its own surrogate: (1/N) gbar^T g_s,
    the gradient g_s on the gradient norms' block, gbar its pool mean and the Hessian taken
    as the identity (see :mod:`goracs.features.gradnorms`); ``goracs select --data`` loads it,
    ``--score influence=FILE`` gives any other (e.g. the paper's SASRec surrogate).

    Then coverage-enhanced selection: drop the highest ``hard_prune`` share, split the rest
    into ``n_groups`` equal-width score groups and fill the smallest groups first with an even
    share of the budget left, drawing uniformly with ``seed``. ``strata_`` holds every
    sample's group.
    """

    name = "dealrec"

    def __init__(self, budget: int, seed: int = 0, lam: float = 1.0, n_groups: int = 50,
                 hard_prune: float = 0.0, influence: str = "scores.influence",
                 effort: str = "grad_norms") -> None:
        super().__init__(budget, seed)
        self.lam = lam
        self.n_groups = n_groups
        self.hard_prune = hard_prune
        self.influence = influence
        self.effort = effort
        self._validate_params()

    @property
    def requires(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(dict.fromkeys((self.influence, self.effort)))

    def _validate_params(self) -> dict[str, Any]:
        return {"lam": check_real("lam", self.lam),
                "n_groups": check_int("n_groups", self.n_groups),
                "hard_prune": check_real("hard_prune", self.hard_prune, 0.0, 1.0,
                                         high_open=True),
                "influence": check_source("influence", self.influence),
                "effort": check_source("effort", self.effort)}

    def _select(self, data: SelectionData) -> None:
        p = self.params_
        with self._stage("score"):
            overall = (_minmax(score_from(data, p["influence"]))
                       + p["lam"] * _minmax(score_from(data, p["effort"])))
        with self._stage("stratify"):
            rng = np.random.default_rng(self.seed)
            idx, self.strata_, budgets = coverage_stratified(
                overall, self.budget, p["n_groups"], p["hard_prune"], rng)
        self.indices_ = idx
        self.overall_ = overall
        self.info_["groups_drawn"] = int(np.count_nonzero(budgets))
        self.info_["groups_nonempty"] = int(len(np.unique(self.strata_[self.strata_ >= 0])))


def _minmax(v: np.ndarray) -> np.ndarray:
    """Rescale to [0, 1]; a constant score becomes all zeros (it ranks nothing)."""
    span = float(v.max() - v.min())
    return (v - v.min()) / span if span > 0 else np.zeros_like(v)
