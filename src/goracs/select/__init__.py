"""Coreset selection: the GORACS engine, the Selector contract and the baselines."""

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
from goracs.select.ot import TransportState, exact_ot, poo_value
from goracs.select.refine import refine

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
