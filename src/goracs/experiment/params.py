"""Selector parameters in a config: the ``[params]`` tables checked against each method's
constructor, the arguments each row runs with, and one trial construction per row."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from goracs.errors import GoracsError
from goracs.experiment.toml_checks import is_none, join, type_name
from goracs.select import available_methods, get_selector
from goracs.select.defaults import TASK_LAMBDA


def constructor_params(method: str) -> set[str]:
    """Arguments the method's own constructor accepts, less ``budget`` and ``seed``."""
    cls = get_selector(method)
    return set(inspect.signature(cls.__init__).parameters) - {"self", "budget", "seed"}


def method_params(table: Mapping[str, Any], where: str,
                  bases: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """A ``[params]`` table (method -> parameters) checked against each method's constructor;
    ``bases`` maps each variant row's name to the registered method it runs. "none" and
    "all" become None."""
    bases = bases or {}
    known = set(available_methods()) | set(bases)
    out: dict[str, dict[str, Any]] = {}
    for method, params in table.items():
        key = join(where, method)
        if method not in known:
            raise GoracsError(f"{key}: unknown method {method!r}; known: "
                              f"{', '.join(sorted(known))}")
        if not isinstance(params, dict):
            raise GoracsError(f"{key}: expected a table of parameters, got {type_name(params)}")
        accepted = constructor_params(bases.get(method, method))
        for p, v in params.items():
            if p not in accepted:
                raise GoracsError(f"{join(key, p)}: method {method!r} has no parameter {p!r} "
                                  f"(it takes: {', '.join(sorted(accepted)) or 'none'})")
            if isinstance(v, dict):
                raise GoracsError(f"{join(key, p)}: expected a value, got a table")
        out[method] = {p: (None if is_none(v) else v) for p, v in params.items()}
    return out


def resolve_params(method: str, task: str, common: Mapping[str, Mapping[str, Any]],
                   per_task: Mapping[str, Mapping[str, Any]], base: str | None = None
                   ) -> dict[str, Any]:
    """A method's constructor arguments for a task: per-task values over common ones; GORACS
    and its ablations get the reference's lambda of the task unless the config sets one.
    ``base`` names the registered method of a variant row called ``method``."""
    params: dict[str, Any] = {}
    base = base or method
    if base.startswith("goracs") and "lam" in constructor_params(base):
        params["lam"] = TASK_LAMBDA[task]
    params.update(common.get(method, {}))
    params.update(per_task.get(method, {}))
    return params


def check_selector(method: str, params: Mapping[str, Any], budget: int, key: str) -> None:
    """Instantiate the selector once so bad parameter values fail before anything runs."""
    cls = get_selector(method)
    try:
        cls(budget=budget, seed=0, **params)
    except GoracsError as exc:
        raise GoracsError(f"{key}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise GoracsError(f"{key}: bad parameters for {method}: {exc}") from None
