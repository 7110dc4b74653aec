"""Coreset selection: the GORACS engine and the Selector contract."""

from goracs.select.base import (
    SelectionData,
    SelectionResult,
    Selector,
    available_methods,
    get_selector,
    register,
)

__all__ = [
    "SelectionData",
    "SelectionResult",
    "Selector",
    "available_methods",
    "get_selector",
    "register",
]
