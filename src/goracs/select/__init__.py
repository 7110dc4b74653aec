"""Coreset selection: the GORACS engine, the Selector contract and the baselines.

The engine (docs/method.md sections 3-5): :mod:`.cost` (the POO cost matrix), :mod:`.greedy`
and :mod:`.capacity` (initialisation, and its continuation past saturation), :mod:`.medoid`,
:mod:`.marginal` and :mod:`.refine` (refinement), :mod:`.ot` (exact transport through POT),
:mod:`.transport` (the plan kept optimal through exchanges; its compiled kernels in
:mod:`._kernels`), :mod:`.goracs` (the selector). Beside it: :mod:`.base` (the Selector
contract), :mod:`.params` and :mod:`.defaults` (hyper-parameter checks, per-task defaults),
:mod:`.baselines`, :mod:`.diagnostics` (method-neutral coreset figures) and :mod:`.io` (a
prepared folder's inputs in, a selection's files out). :mod:`.commands` is the command line.
"""

from goracs.select import baselines  # noqa: I001  (importing registers the baselines)
from goracs.select.base import (
    SelectionData,
    SelectionResult,
    Selector,
    available_methods,
    get_selector,
    register,
)
from goracs.select.cost import poo_cost
from goracs.select.goracs import GORACS, class_budgets
from goracs.select.greedy import greedy_init
from goracs.select.marginal import marginal_impact
from goracs.select.ot import exact_ot, poo_value
from goracs.select.refine import refine
from goracs.select.transport import TransportState

__all__ = [
    "GORACS",
    "SelectionData",
    "SelectionResult",
    "Selector",
    "TransportState",
    "baselines",
    "available_methods",
    "class_budgets",
    "exact_ot",
    "get_selector",
    "greedy_init",
    "marginal_impact",
    "poo_cost",
    "poo_value",
    "refine",
    "register",
]
