"""Distribution-based baselines: they look only at where samples lie in embedding space."""

from __future__ import annotations

from typing import Any

import numpy as np

from goracs.select.base import SelectionData, Selector, register
from goracs.select.baselines.geometry import (
    as_points,
    kmeans,
    progress,
    row_norms_sq,
    sq_dists_to,
)
from goracs.select.baselines.strata import draw_within, proportional_allocation
from goracs.select.params import check_int


@register
class RandomSelector(Selector):
    """Random sampling: a uniform draw without replacement from the training pool.

    The floor every coreset method has to clear; needs no features at all.
    """

    name = "random"
    requires = ()

    def _select(self, data: SelectionData) -> None:
        with self._stage("draw"):
            rng = np.random.default_rng(self.seed)
            self.indices_ = rng.choice(data.n_train, size=self.budget, replace=False)


@register
class KCenterGreedy(Selector):
    """K-Center greedy (Sener & Savarese, ICLR 2018): farthest-point covering of the embeddings.

    Starts from a centre drawn with ``seed``, then repeatedly adds the sample farthest from
    every centre chosen so far, a 2-approximation of the minimax covering radius
    max_i min_{c in S} ||e_i - e_c||. One pass over the pool per pick, as a matrix-vector
    product, so memory stays O(N). ``info_["covering_radius"]`` is the final radius.
    """

    name = "kcenter"
    requires = ("train_emb",)

    def _select(self, data: SelectionData) -> None:
        with self._stage("prepare"):
            x = as_points(data.train_emb)
            sq = row_norms_sq(x)
        n = self.budget
        with self._stage("greedy"):
            rng = np.random.default_rng(self.seed)
            chosen = np.empty(n, dtype=np.int64)
            chosen[0] = int(rng.integers(x.shape[0]))
            closest = sq_dists_to(x, sq, x[chosen[0]])
            # Chosen samples sit at -1, below any real distance, so argmax never repeats one.
            closest[chosen[0]] = -1.0
            for t in progress(range(1, n), n - 1, "k-center"):
                i = int(np.argmax(closest))
                chosen[t] = i
                np.minimum(closest, sq_dists_to(x, sq, x[i]), out=closest)
                closest[i] = -1.0
        self.indices_ = chosen
        self.info_["covering_radius"] = float(np.sqrt(max(closest.max(), 0.0)))


@register
class Herding(Selector):
    """Herding (Welling, ICML 2009; Chen et al., UAI 2010): greedy matching of the pool mean.

    Adds, one at a time, the sample that brings the coreset mean closest to the pool mean mu:
    at step t it takes argmin_i ||t mu - sum_{s in S} e_s - e_i||, i.e. kernel herding with a
    linear kernel, without replacement. Deterministic (``seed`` is unused; ties go to the lower
    index). ``info_["mean_gap"]`` is the final ||mean(S) - mu||.
    """

    name = "herding"
    requires = ("train_emb",)

    def _select(self, data: SelectionData) -> None:
        with self._stage("prepare"):
            x = as_points(data.train_emb)
            sq = row_norms_sq(x)
            mu = x.mean(axis=0)
        n = self.budget
        with self._stage("greedy"):
            chosen = np.empty(n, dtype=np.int64)
            taken = np.zeros(x.shape[0], dtype=bool)
            total = np.zeros_like(mu)
            for t in progress(range(n), n, "herding"):
                target = (t + 1) * mu - total
                # ||target - e_i||^2 up to the constant ||target||^2.
                cost = sq - 2.0 * (x @ target)
                cost[taken] = np.inf
                i = int(np.argmin(cost))
                chosen[t] = i
                taken[i] = True
                total += x[i]
        self.indices_ = chosen
        self.info_["mean_gap"] = float(np.linalg.norm(total / n - mu))


@register
class StratifiedClusters(Selector):
    """Stratified sampling over embedding clusters (Cochran, Sampling Techniques, 1977).

    Clusters the training embeddings with seeded k-means++ / Lloyd into ``n_clusters`` strata,
    gives each stratum a share of the budget proportional to its size (largest remainder, so the
    shares sum exactly to the budget), and draws uniformly within each stratum. ``labels_``
    holds the cluster of every sample; ``info_`` the cluster sizes and the allocation.
    """

    name = "stratified"
    requires = ("train_emb",)

    def __init__(self, budget: int, seed: int = 0, n_clusters: int = 16,
                 max_iter: int = 100) -> None:
        super().__init__(budget, seed)
        self.n_clusters = n_clusters
        self.max_iter = max_iter
        self._validate_params()

    def _validate_params(self) -> dict[str, Any]:
        return {"n_clusters": check_int("n_clusters", self.n_clusters),
                "max_iter": check_int("max_iter", self.max_iter)}

    def _select(self, data: SelectionData) -> None:
        x = as_points(data.train_emb)
        k = min(self.params_["n_clusters"], x.shape[0])
        with self._stage("cluster"):
            labels, _ = kmeans(x, k, self.seed, self.params_["max_iter"])
        with self._stage("draw"):
            sizes = np.bincount(labels, minlength=k)
            alloc = proportional_allocation(sizes, self.budget)
            # A stream apart from the one k-means++ seeding used.
            rng = np.random.default_rng((self.seed, 1))
            self.indices_ = draw_within(labels, alloc, rng)
        self.labels_ = labels
        self.info_["cluster_sizes"] = [int(s) for s in sizes]
        self.info_["allocation"] = [int(a) for a in alloc]
