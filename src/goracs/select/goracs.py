"""The GORACS selector: POO cost, greedy initialisation, exact-swap refinement (ITRA), and
its label-enhanced form (method.md sections 3-5)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from goracs.cluster import parse_ray
from goracs.errors import GoracsError
from goracs.select.base import SelectionData, Selector, register
from goracs.select.cost import poo_cost
from goracs.select.cost_blocks import CostBlocks, RowStore, cache_rows
from goracs.select.greedy import (
    SATURATION_RULES,
    STOP_RULES,
    _row_sums,
    greedy_select,
    relaxed_objective,
)
from goracs.select.medoid import alternate
from goracs.select.memory import ENGINES, choose_engine, parse_memory
from goracs.select.params import (
    check_bool,
    check_choice,
    check_int,
    check_optional_int,
    check_real,
)
from goracs.select.refine import refine
from goracs.select.streaming import (
    PoolState,
    _block_row_sums,
    alternate_streaming,
    greedy_select_streaming,
    impact_function,
)
from goracs.select.transport import TransportState

if TYPE_CHECKING:
    from goracs.select.remote import RayPool

# Medoid rounds stop once one lowers POO by less than this share.
MEDOID_TOL = 1e-3


def class_budgets(valid_labels: np.ndarray, budget: int) -> dict[int, int]:
    """n_k = n * V_k / V, rounded by largest remainder so the budgets sum to n exactly.

    Ties in the remainder go to the smaller class label.
    """
    classes, counts = np.unique(valid_labels, return_counts=True)
    exact = budget * counts / counts.sum()
    base = np.floor(exact).astype(np.int64)
    short = budget - int(base.sum())
    order = np.lexsort((classes, -(exact - base)))
    base[order[:short]] += 1
    return {int(c): int(b) for c, b in zip(classes, base, strict=True)}


@register
class GORACS(Selector):
    """GORACS (Group-level OT-guided coreset selection, KDD 2025): minimise OT to validation.

    Parameters
    ----------
    budget : n, the coreset size.
    lam : lambda, weight of the gradient-norm term of the cost (0 ignores gradients).
    max_iters : accepted swaps at most in refinement; None runs until no candidate improves.
    candidates : c, the coreset and outside samples kept as swap candidates per round.
    init_stop : "exact" (stop greedy at n) or "assigned" (the reference's rule).
    saturation : what picks the rest once every relaxed gain is zero: "capacity" (the outside
        sample that fits most cheaply into the exact transport with every pick at its final
        capacity, see :mod:`goracs.select.capacity`) or "index" (the plain greedy's smallest
        index, as the reference does).
    swaps_per_round : accepted swaps per marginal-impact computation; 1 is the reference's
        loop, None takes every improving swap of a round's candidate list.
    medoid_rounds : rounds of capacitated medoid moves between greedy initialisation and
        exchange refinement (each followed by an exact transport solve); 0 skips the stage and
        gives the reference's two-stage ITRA.
    refine_steps : False stops after greedy initialisation (an ablation).
    patience : failed swap evaluations in a row that end refinement (None: no limit; the
        reference stops only when a whole c*c candidate list fails).
    tol : a refinement round that lowers POO by less than this share ends refinement
        (0: stop only when a round finds no improving swap, as the reference does).
    time_limit : seconds of refinement at most (None: no limit; a limit makes the result
        depend on machine speed, so it is off by default).
    per_class : with class labels in the data, select within each class with budgets in
        proportion to the validation classes (label-enhanced GORACS); False ignores the labels
        and selects over the whole pool at once.
    engine : "dense" holds the N x V cost matrix; "streaming" computes its rows on demand from
        the embeddings and holds only the coreset's and the candidates' rows (same selection,
        far less memory: :mod:`goracs.select.cost_blocks`); "auto" takes dense when it fits
        ``max_memory``. ``info["engine"]`` records the one used.
    max_memory : the memory budget, bytes or a size such as "6GB"; None: 70% of the memory
        available when the selection starts.
    ray : run the streaming engine's passes over the pool as Ray tasks
        (:mod:`goracs.select.remote`): "local:N" (a local Ray of N CPUs for this selection),
        "auto" or "HOST:PORT" (a running cluster); a Ray this process has initialised already
        is used as it is. Implies the streaming engine ("dense" is refused); the same selection
        as without it. ``info["ray"]`` records the session, the passes and the tasks. None
        (the default) never imports Ray.
    """

    name = "goracs"
    requires = ("train_emb", "valid_emb")

    def __init__(
        self,
        budget: int,
        seed: int = 0,
        lam: float = 0.5,
        max_iters: int | None = 100,
        candidates: int = 30,
        init_stop: str = "exact",
        swaps_per_round: int | None = None,
        medoid_rounds: int = 20,
        refine_steps: bool = True,
        patience: int | None = 30,
        tol: float = 1e-4,
        time_limit: float | None = None,
        per_class: bool = True,
        saturation: str = "capacity",
        engine: str = "auto",
        max_memory: int | str | None = None,
        ray: str | None = None,
    ) -> None:
        super().__init__(budget, seed)
        self.lam = lam
        self.max_iters = max_iters
        self.candidates = candidates
        self.init_stop = init_stop
        self.swaps_per_round = swaps_per_round
        self.medoid_rounds = medoid_rounds
        self.refine_steps = refine_steps
        self.patience = patience
        self.tol = tol
        self.time_limit = time_limit
        self.per_class = per_class
        self.saturation = saturation
        self.engine = engine
        self.max_memory = max_memory
        self.ray = ray
        self._validate_params()

    def _validate_params(self) -> dict[str, Any]:
        """Check every hyper-parameter; the selection uses them as given (none is recorded
        otherwise)."""
        check_real("lambda", self.lam)
        check_int("candidates", self.candidates)
        check_int("medoid-rounds", self.medoid_rounds, 0)
        check_optional_int("patience", self.patience, 1)  # None: no limit
        check_optional_int("max-iters", self.max_iters, 0)
        check_optional_int("swaps-per-round", self.swaps_per_round, 1)
        check_real("tol", self.tol, 0.0, 1.0, high_open=True)
        if self.time_limit is not None and check_real("time-limit", self.time_limit) == 0:
            raise GoracsError(f"time-limit must be a number > 0, got {self.time_limit!r}")
        check_choice("init-stop", self.init_stop, STOP_RULES)
        check_choice("saturation", self.saturation, SATURATION_RULES, show=True)
        check_bool("refine-steps", self.refine_steps)
        check_bool("per-class", self.per_class)
        check_choice("engine", self.engine, ENGINES)
        if self.max_memory is not None:
            parse_memory(self.max_memory)
        if self.ray is not None:
            if not isinstance(self.ray, str):
                raise GoracsError(f"ray must be a text such as local:2 or HOST:PORT, got "
                                  f"{self.ray!r}")
            parse_ray(self.ray)
            if self.engine == "dense":
                raise GoracsError("ray runs the streaming engine's passes; use engine auto or "
                                  "streaming with it")
        return {}

    def _check_inputs(self, data: SelectionData) -> None:
        if self.lam > 0 and data.grad_norms is None:
            raise GoracsError("lambda > 0 needs gradient norms (--grad-norms)")

    def _select(self, data: SelectionData) -> None:
        self._check_inputs(data)
        assert data.train_emb is not None and data.valid_emb is not None
        self._choose_engine(data)
        if self.ray is None:
            self._select_in(data, None)
            return
        from goracs.select.remote import ray_pool

        with ray_pool(parse_ray(self.ray)) as pool:
            self._select_in(data, pool)
            self.info_["ray"] = pool.info()

    def _select_in(self, data: SelectionData, pool: RayPool | None) -> None:
        """The selection itself; with ``pool``, its passes over the pool run on Ray."""
        assert data.train_emb is not None and data.valid_emb is not None
        if data.train_labels is None or not self.per_class:
            out = self._run_itra(data.train_emb, data.valid_emb, data.grad_norms, self.budget,
                                 pool=pool)
            self.indices_ = out["indices"]
            self.objective_ = out["poo"]
            self.trace_ = out["trace"]
            self.info_.update({k: v for k, v in out.items()
                               if k not in ("indices", "poo", "trace")})
            return
        self._select_by_class(data, pool)

    def _choose_engine(self, data: SelectionData) -> None:
        """Dense or streaming, by the largest subproblem's need against the budget."""
        assert data.train_emb is not None and data.valid_emb is not None
        if data.train_labels is None or not self.per_class:
            problems = [(data.train_emb.shape[0], data.valid_emb.shape[0], self.budget)]
        else:
            assert data.valid_labels is not None
            problems = [(int(np.sum(data.train_labels == k)),
                         int(np.sum(data.valid_labels == k)), n_k)
                        for k, n_k in class_budgets(data.valid_labels, self.budget).items()
                        if n_k > 0]
        budget = None if self.max_memory is None else parse_memory(self.max_memory)
        engine = "streaming" if self.ray is not None else self.engine
        self.engine_, self.engine_note_, figures = choose_engine(engine, problems, budget,
                                                                 self.candidates)
        if self.ray is not None:
            self.engine_note_ = (f"ray {self.ray}: the streaming engine's passes run as Ray "
                                 f"tasks; {self.engine_note_}")
        if budget is None:  # the machine's share: kept out of the manifest, which stays the same
            figures.pop("memory_budget")
        self.info_.update(engine=self.engine_, **figures)

    def _select_by_class(self, data: SelectionData, pool: RayPool | None = None) -> None:
        """Label-enhanced ITRA: ITRA within each class, budgets in proportion to validation."""
        assert data.train_labels is not None and data.valid_labels is not None
        budgets = class_budgets(data.valid_labels, self.budget)
        v_total = data.valid_labels.shape[0]
        picks: list[np.ndarray] = []
        per_class: dict[str, Any] = {}
        weights: dict[int, float] = {}
        results: dict[int, dict[str, Any]] = {}
        for label, n_k in budgets.items():
            rows = np.flatnonzero(data.train_labels == label)
            if n_k > 0 and rows.shape[0] == 0:
                raise GoracsError(f"class {label} has budget {n_k} but no training samples")
            if n_k > rows.shape[0]:
                raise GoracsError(f"class {label} has budget {n_k} but only {rows.shape[0]} "
                                  "training samples")
            if n_k == 0:
                continue
            cols = np.flatnonzero(data.valid_labels == label)
            weights[label] = cols.shape[0] / v_total
            grads = None if data.grad_norms is None else data.grad_norms[rows]
            res = self._run_itra(data.train_emb[rows], data.valid_emb[cols], grads, n_k,
                                 take_all=n_k == rows.shape[0], pool=pool)
            picks.append(rows[res["indices"]])
            results[label] = res
            per_class[str(label)] = {"budget": n_k, "train": int(rows.shape[0]),
                                     "valid": int(cols.shape[0]), "poo": res["poo"],
                                     "trace": res["trace"],
                                     "pass_at_1": res.get("pass_at_1"),
                                     "poo_greedy": res.get("poo_greedy", res["poo"]),
                                     "positive_gain_picks": res.get("positive_gain_picks"),
                                     "capacity_picks": res.get("capacity_picks", 0)}
        self.indices_ = np.concatenate(picks)
        # The combined objective is the validation-weighted sum of the class objectives; its
        # trace follows the classes as they are refined one after another.
        start = {k: r["trace"][0] for k, r in results.items()}
        level = sum(weights[k] * start[k] for k in results)
        trace = [level]
        for k, r in results.items():
            for a, b in zip(r["trace"][:-1], r["trace"][1:], strict=True):
                level += weights[k] * (b - a)
                trace.append(level)
        self.trace_ = trace
        self.objective_ = float(sum(weights[k] * r["poo"] for k, r in results.items()))
        self.info_["classes"] = per_class
        self.info_["class_weights"] = {str(k): w for k, w in weights.items()}
        # POO right after initialisation, weighted as the objective is (the trace's start)
        self.info_["poo_greedy"] = trace[0]
        # classes taken whole (budget = pool) make no picks and count none
        self.info_["positive_gain_picks"] = sum(
            r.get("positive_gain_picks") or 0 for r in results.values())
        self.info_["capacity_picks"] = sum(r.get("capacity_picks", 0) for r in results.values())

    def _run_itra(self, train_emb: np.ndarray, valid_emb: np.ndarray,
                  grad_norms: np.ndarray | None, n: int, take_all: bool = False,
                  pool: RayPool | None = None) -> dict[str, Any]:
        if self.engine_ == "streaming":
            return self._run_itra_streaming(train_emb, valid_emb, grad_norms, n, take_all,
                                            pool)
        with self._stage("cost"):
            cost = poo_cost(train_emb, valid_emb, grad_norms, self.lam)
        if take_all:
            with self._stage("exact_ot"):
                state = TransportState(cost, np.arange(n))
            return {"indices": np.arange(n), "poo": state.poo, "trace": [state.poo]}
        with self._stage("greedy"):
            greedy = greedy_select(cost, n, stop=self.init_stop, saturation=self.saturation)
        init = greedy.indices
        out: dict[str, Any] = {"relaxed_objective": relaxed_objective(cost, init),
                               # picks whose relaxed gain was positive; the rest were chosen
                               # past saturation (by fill cost, or by index)
                               "positive_gain_picks": greedy.positive_gain_picks,
                               "capacity_picks": greedy.capacity_picks}
        with self._stage("exact_ot"):
            # the capacitated continuation ends with an optimal plan: no solve needed
            state = (TransportState(cost, init) if greedy.transport is None
                     else greedy.transport.state())
        del greedy
        out["poo_greedy"] = state.poo
        if not self.refine_steps or n < 2:
            out.update(indices=np.sort(init), poo=state.poo, trace=[state.poo])
            return out
        trace, trace_s = [state.poo], [0.0]
        if self.medoid_rounds > 0:
            with self._stage("medoid"):
                # a coarser tolerance than exchange's: the last medoid rounds gain little for a
                # whole exact solve each, and exchange refinement does the fine work after
                med = alternate(cost, state, max_rounds=self.medoid_rounds,
                                tol=max(self.tol, MEDOID_TOL))
            state = med.state
            trace += med.trace
            trace_s += med.trace_seconds
            out.update(poo_medoid=state.poo, medoid_rounds=med.rounds, medoid_moves=med.moves)
        offset = self.seconds_.get("medoid", 0.0)
        with self._stage("refine"):
            res = refine(cost, state.indices, candidates=self.candidates,
                         max_iters=self.max_iters, swaps_per_round=self.swaps_per_round,
                         time_limit=self.time_limit, tol=self.tol, patience=self.patience,
                         state=state)
        out.update(_refined(res, trace, trace_s, offset))
        return out

    def _run_itra_streaming(self, train_emb: np.ndarray, valid_emb: np.ndarray,
                            grad_norms: np.ndarray | None, n: int, take_all: bool = False,
                            pool: RayPool | None = None) -> dict[str, Any]:
        """:meth:`_run_itra` without the dense matrix (:mod:`goracs.select.streaming`); with
        ``pool``, its passes over the pool run as Ray tasks (:mod:`goracs.select.remote`)."""
        with self._stage("cost"):
            blocks = _cost_blocks(train_emb, valid_emb, grad_norms, self.lam, pool)
            store = RowStore(blocks, 2 * n + self.candidates + 2 + cache_rows(blocks.shape[0]))
        if take_all:
            with self._stage("exact_ot"):
                state = TransportState(store.array, store.slots(np.arange(n), pin=True))
            return {"indices": np.arange(n), "poo": state.poo, "trace": [state.poo],
                    "cost_passes": blocks.passes}
        with self._stage("greedy"):
            greedy, pt = greedy_select_streaming(blocks, store, n, stop=self.init_stop,
                                                 saturation=self.saturation)
        init = greedy.indices
        init_c = store.slots(init, pin=True)
        out: dict[str, Any] = {"relaxed_objective": relaxed_objective(store.array, init_c),
                               "positive_gain_picks": greedy.positive_gain_picks,
                               "capacity_picks": greedy.capacity_picks}
        with self._stage("exact_ot"):
            state = TransportState(store.array, init_c) if pt is None else pt.state()
        del greedy, pt
        out["poo_greedy"] = state.poo
        if not self.refine_steps or n < 2:
            out.update(indices=np.sort(init), poo=state.poo, trace=[state.poo],
                       cost_passes=blocks.passes)
            return out
        trace, trace_s = [state.poo], [0.0]
        if self.medoid_rounds > 0:
            with self._stage("medoid"):
                med = alternate_streaming(blocks, store, state, max_rounds=self.medoid_rounds,
                                          tol=max(self.tol, MEDOID_TOL))
            state = med.state
            trace += med.trace
            trace_s += med.trace_seconds
            out.update(poo_medoid=state.poo, medoid_rounds=med.rounds, medoid_moves=med.moves)
        offset = self.seconds_.get("medoid", 0.0)
        pool_state = PoolState(store, state)
        with self._stage("refine"):
            res = refine(blocks, pool_state.indices, candidates=self.candidates,  # type: ignore[arg-type]
                         max_iters=self.max_iters, swaps_per_round=self.swaps_per_round,
                         time_limit=self.time_limit, tol=self.tol, patience=self.patience,
                         state=pool_state, impacts=impact_function(blocks, store))  # type: ignore[arg-type]
        out.update(_refined(res, trace, trace_s, offset), cost_passes=blocks.passes)
        return out


@register
class GORACSNoGrad(GORACS):
    """GORACS ablation without gradient information (lambda = 0): geometry alone."""

    name = "goracs-nograd"
    requires = ("train_emb", "valid_emb")

    def __init__(self, budget: int, seed: int = 0, max_iters: int | None = 100,
                 candidates: int = 30, init_stop: str = "exact",
                 swaps_per_round: int | None = None, medoid_rounds: int = 20,
                 patience: int | None = 30, tol: float = 1e-4,
                 saturation: str = "capacity", engine: str = "auto",
                 max_memory: int | str | None = None, ray: str | None = None) -> None:
        super().__init__(budget, seed, lam=0.0, max_iters=max_iters, candidates=candidates,
                         init_stop=init_stop, swaps_per_round=swaps_per_round,
                         medoid_rounds=medoid_rounds, patience=patience, tol=tol,
                         saturation=saturation, engine=engine, max_memory=max_memory, ray=ray)


@register
class GORACSGreedy(GORACS):
    """GORACS ablation with greedy initialisation only (no exchange refinement)."""

    name = "goracs-greedy"

    def __init__(self, budget: int, seed: int = 0, lam: float = 0.5,
                 init_stop: str = "exact", saturation: str = "capacity",
                 engine: str = "auto", max_memory: int | str | None = None,
                 ray: str | None = None) -> None:
        super().__init__(budget, seed, lam=lam, init_stop=init_stop, refine_steps=False,
                         saturation=saturation, engine=engine, max_memory=max_memory, ray=ray)


@register
class GORACSIndividual(GORACS):
    """GORACS ablation with individual-level selection: the n samples of lowest own cost.

    Each sample is scored alone by the POO it would have as a one-sample coreset, the mean of
    its row of the same cost matrix (embedding distance to the validation set minus lambda
    times its normalised gradient norm); no group-level transport couples the choices. With
    lambda = 0 this is nearest-to-validation selection. Class labels are ignored.

    Both engines of :class:`GORACS` serve it: dense holds the cost matrix, streaming takes the
    row sums block by block (one pass over the pool, on Ray with ``ray``) and computes only
    the n chosen rows for the exact POO. The row sums are the same float64 sums of the same
    float32 rows either way, so the two engines choose the same samples. ``choose_engine``
    sizes dense as GORACS's (its medoid matrix included), a bound from above here.
    """

    name = "goracs-individual"

    def __init__(self, budget: int, seed: int = 0, lam: float = 0.5, engine: str = "auto",
                 max_memory: int | str | None = None, ray: str | None = None) -> None:
        super().__init__(budget, seed, lam=lam, per_class=False, engine=engine,
                         max_memory=max_memory, ray=ray)

    def _select_in(self, data: SelectionData, pool: RayPool | None) -> None:
        assert data.train_emb is not None and data.valid_emb is not None
        n, nv = self.budget, data.valid_emb.shape[0]
        if self.engine_ == "dense":
            with self._stage("cost"):
                cost = poo_cost(data.train_emb, data.valid_emb, data.grad_norms, self.lam)
            with self._stage("score"):
                sums = _row_sums(cost)
            pick = _lowest(sums, n)
            with self._stage("exact_ot"):
                self.objective_ = TransportState(cost, pick).poo
        else:
            with self._stage("cost"):
                blocks = _cost_blocks(data.train_emb, data.valid_emb, data.grad_norms,
                                      self.lam, pool)
            with self._stage("score"):
                sums = blocks.gather(_block_row_sums)
            pick = _lowest(sums, n)
            with self._stage("exact_ot"):
                store = RowStore(blocks, n)
                self.objective_ = TransportState(store.array, store.slots(pick, pin=True)).poo
            self.info_["cost_passes"] = blocks.passes
        self.indices_ = pick
        self.trace_ = [self.objective_]
        # the best own cost chosen and the worst, as mean costs (a one-sample coreset's POO)
        self.info_["own_cost_range"] = [float(sums[pick[0]] / nv), float(sums[pick[-1]] / nv)]


def _lowest(sums: np.ndarray, n: int) -> np.ndarray:
    """The n rows of least sum, in that order; ties go to the smaller row."""
    return np.lexsort((np.arange(sums.shape[0]), sums))[:n]


def _cost_blocks(train_emb: np.ndarray, valid_emb: np.ndarray, grad_norms: np.ndarray | None,
                 lam: float, pool: RayPool | None) -> CostBlocks:
    """The cost source of the streaming engine: its passes here, or as Ray tasks on ``pool``."""
    if pool is not None:
        from goracs.select.remote import RayBlocks

        return RayBlocks(pool, train_emb, valid_emb, grad_norms, lam)
    return CostBlocks(train_emb, valid_emb, grad_norms, lam)


def _refined(res: Any, trace: list[float], trace_s: list[float],
             offset: float) -> dict[str, Any]:
    """What the exchange stage adds to an ITRA run's record, dense or streaming: the final
    indices and POO, the POO trace (after greedy, after each medoid round, then after each
    accepted swap) with its seconds since the end of the first exact solve, and the swap
    counts."""
    return dict(
        indices=res.indices,
        poo=res.poo,
        trace=trace + res.trace[1:],
        trace_seconds=[round(s, 4) for s in trace_s]
        + [round(offset + s, 4) for s in res.trace_seconds[1:]],
        swaps=res.n_accepted,
        swap_trials=res.n_trials,
        rounds=res.n_rounds,
        pass_at_1=res.pass_at_1,
        refine_stats=res.stats,
    )
