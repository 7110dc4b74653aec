"""The Selector contract (scikit-learn style), the parameter checks beside the engine, the
per-task defaults, and the layout of the transport code."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import goracs.select as gs
from goracs.errors import GoracsError
from goracs.select import SelectionData, available_methods, get_selector
from goracs.select.defaults import DEFAULT_LAMBDA, TASK_LAMBDA, default_lambda
from goracs.select.params import (
    check_bool,
    check_choice,
    check_int,
    check_optional_int,
    check_real,
    check_source,
    score_from,
)

SELECT = Path(gs.__file__).resolve().parent


def _data(n: int = 60, v: int = 12, seed: int = 0) -> SelectionData:
    rng = np.random.default_rng(seed)
    return SelectionData(
        train_emb=rng.normal(size=(n, 4)).astype(np.float32),
        valid_emb=rng.normal(size=(v, 4)).astype(np.float32),
        grad_norms=rng.uniform(1, 2, n).astype(np.float32),
        train_labels=np.arange(n) % 2, valid_labels=np.arange(v) % 2,
        scores={"el2n": rng.uniform(size=n), "influence": rng.normal(size=n)})


#: hyper-parameters given as ints where the method takes floats: stored as given, recorded
#: (and used) as the checks normalise them
GIVEN = {
    "ccs": {"beta": 0, "n_strata": 5, "score": "scores.el2n"},
    "d2pruning": {"n_neighbors": 4, "gamma_f": 2, "gamma_r": 1},
    "dealrec": {"lam": 2, "n_groups": 5, "hard_prune": 0},
    "stratified": {"n_clusters": 3, "max_iter": 7},
    "goracs": {"lam": 1, "candidates": 4, "max_iters": 5, "per_class": False},
    "goracs-individual": {"lam": 0},
}


@pytest.mark.parametrize("method", sorted(available_methods()))
def test_hyper_parameters_are_stored_as_given(method):
    given = {"budget": 6, "seed": 3, **GIVEN.get(method, {})}
    sel = get_selector(method)(**given)
    params = sel.get_params()
    for key, value in given.items():
        assert params[key] == value and type(params[key]) is type(value), key
        assert getattr(sel, key) is value
    sel.fit(_data())
    recorded = sel.result().params
    assert set(recorded) == set(params)
    assert list(recorded) == list(params)  # the manifest's order: the constructor's


def test_the_manifest_records_what_the_checks_normalise():
    ccs = get_selector("ccs")(6, **GIVEN["ccs"]).fit(_data())
    assert ccs.get_params()["beta"] == 0 and isinstance(ccs.get_params()["beta"], int)
    assert ccs.params_["beta"] == 0.0 and isinstance(ccs.params_["beta"], float)
    assert ccs.result().params["beta"] == 0.0 and isinstance(ccs.result().params["beta"], float)
    goracs = get_selector("goracs")(6, **GIVEN["goracs"]).fit(_data())
    assert goracs.result().params["lam"] == 1 and isinstance(goracs.result().params["lam"], int)
    # an ablation reports the values it fixes
    nograd = get_selector("goracs-nograd")(6).get_params()
    assert nograd["lam"] == 0.0 and nograd["refine_steps"] is True


@pytest.mark.parametrize("method", sorted(available_methods()))
def test_fit_sets_only_trailing_underscore_attributes(method):
    sel = get_selector(method)(6, **GIVEN.get(method, {}))
    before = set(vars(sel))
    sel.fit(_data())
    added = set(vars(sel)) - before
    assert added and all(a.endswith("_") for a in added), added
    assert {"params_", "indices_", "objective_", "trace_", "seconds_", "info_"} <= added
    assert set(vars(sel)) - added == before  # hyper-parameters untouched
    assert sel.get_params() == get_selector(method)(6, **GIVEN.get(method, {})).get_params()


def test_set_params_changes_checks_and_restores():
    sel = get_selector("ccs")(10)
    assert sel.set_params(beta=0.3, n_strata=4) is sel
    assert sel.get_params()["beta"] == 0.3 and sel.n_strata == 4
    with pytest.raises(GoracsError, match=r"beta must be a number in \[0.0, 1.0\), got 1.5"):
        sel.set_params(n_strata=8, beta=1.5)
    assert sel.beta == 0.3 and sel.n_strata == 4  # nothing half-changed
    with pytest.raises(GoracsError, match="method 'ccs' has no parameter 'alpha'"):
        sel.set_params(alpha=1)
    # the score a hyper-parameter names is what fit requires
    assert sel.requires == ("grad_norms",)
    sel.set_params(score="scores.el2n")
    assert sel.requires == ("scores.el2n",)
    with pytest.raises(GoracsError, match="per-sample score 'el2n'"):
        sel.fit(SelectionData(grad_norms=np.ones(30)))
    # set_params(**get_params()) is a no-op, for an ablation's fixed values too
    nograd = get_selector("goracs-nograd")(5)
    nograd.set_params(**nograd.get_params())
    assert nograd.get_params() == get_selector("goracs-nograd")(5).get_params()


@pytest.mark.parametrize("method, key, bad, message", [
    ("goracs", "tol", 1.0, r"tol must be a number in \[0.0, 1.0\)"),
    ("goracs", "saturation", "never", "saturation must be one of capacity, index, got 'never'"),
    ("goracs", "init_stop", "late", "init-stop must be one of exact, assigned$"),
    ("goracs", "per_class", 1, "per-class must be true or false, got 1"),
    ("goracs", "patience", 0, "patience must be an integer >= 1, got 0"),
    ("goracs-individual", "lam", -1, r"lambda must be a number in \[0.0, inf\]"),
    ("stratified", "n_clusters", 0, "n_clusters must be an integer >= 1"),
    ("d2pruning", "difficulty", "el2n", "difficulty must be 'grad_norms' or 'scores.<name>'"),
    ("dealrec", "hard_prune", 1, r"hard_prune must be a number in \[0.0, 1.0\)"),
])
def test_bad_values_fail_at_construction_and_in_fit(method, key, bad, message):
    cls = get_selector(method)
    # at construction: a config or a command stops before any work
    with pytest.raises(GoracsError, match=message):
        cls(5, **{key: bad})
    # and in fit, whatever reached the attribute since
    sel = cls(5)
    setattr(sel, key, bad)
    with pytest.raises(GoracsError, match=message):
        sel.fit(_data())


def test_param_checks():
    assert check_int("k", np.int64(3)) == 3 and type(check_int("k", np.int64(3))) is int
    for bad in (True, 2.0, "2", 0):
        with pytest.raises(GoracsError, match=r"^k must be an integer >= 1, got "):
            check_int("k", bad)
    assert check_optional_int("k", None) is None and check_optional_int("k", 0, 0) == 0
    assert check_real("x", 1) == 1.0 and isinstance(check_real("x", 1), float)
    for bad in (np.nan, np.inf, -0.1, False, "1"):
        with pytest.raises(GoracsError, match=r"^x must be a number in \[0.0, inf\], got "):
            check_real("x", bad)
    assert check_bool("flag", False) is False
    with pytest.raises(GoracsError, match="^flag must be true or false, got 0$"):
        check_bool("flag", 0)
    assert check_choice("c", "a", ("a", "b")) == "a"
    with pytest.raises(GoracsError, match="^c must be one of a, b$"):
        check_choice("c", "z", ("a", "b"))
    assert check_source("s", "scores.x") == "scores.x"
    with pytest.raises(GoracsError, match="must be 'grad_norms' or 'scores.<name>'"):
        check_source("s", "scores.")
    data = SelectionData(grad_norms=np.ones(3, np.float32), scores={"x": np.arange(3)})
    assert score_from(data, "scores.x").dtype == np.float64
    with pytest.raises(GoracsError, match="this method needs scores.y"):
        score_from(data, "scores.y")


def test_default_lambda_per_task():
    assert TASK_LAMBDA == {"seqrec": 0.1, "ctr": 0.5} and DEFAULT_LAMBDA == 0.5
    for name in ("goracs", "goracs-nograd", "goracs-greedy", "goracs-individual"):
        assert default_lambda(get_selector(name), "seqrec") == 0.1
        assert default_lambda(get_selector(name), "ctr") == 0.5
        assert default_lambda(get_selector(name), None) == 0.5
    # not built on the engine: its own default stays (DEALRec's lam is another weight)
    for name in ("dealrec", "random"):
        assert default_lambda(get_selector(name), "seqrec") is None


# -- layout -----------------------------------------------------------------------------------

def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def test_the_engine_does_not_import_the_baselines():
    for path in sorted(SELECT.glob("*.py")):
        if path.name == "__init__.py":  # importing the package registers the baselines
            continue
        assert not any(m.startswith("goracs.select.baselines") for m in _imports(path)), path


def test_kernels_sit_beside_the_public_ot_api():
    import numba

    from goracs.select import _kernels, capacity, ot, transport

    assert "numba" not in _imports(SELECT / "ot.py")
    assert "numba" not in _imports(SELECT / "transport.py")
    assert gs.TransportState is transport.TransportState
    assert gs.exact_ot is ot.exact_ot and gs.poo_value is ot.poo_value
    names = ("_sort_rows", "_resort_rows", "_plan_cost", "_col_add", "_col_get", "_push_path",
             "_sift_up", "_sift_down", "_heap_update", "_heap_pop", "_swap_reoptimise")
    for name in names:
        kernel = getattr(_kernels, name)
        assert isinstance(kernel, numba.core.registry.CPUDispatcher), name
        assert kernel.targetoptions.get("nopython", True), name
        assert type(kernel._cache).__name__ != "NullCache", f"{name} is not cached"
    for name in ("_sort_rows", "_resort_rows"):
        assert getattr(_kernels, name).targetoptions.get("parallel"), name
    for name in ("_push_path", "_heap_pop", "_heap_update"):
        assert getattr(capacity, name) is getattr(_kernels, name)
    for name in ("_plan_cost", "_sort_rows", "_resort_rows", "_swap_reoptimise"):
        assert getattr(transport, name) is getattr(_kernels, name)
