"""Checks of baseline hyper-parameters and score sources, failing with one-line GoracsErrors."""

from __future__ import annotations

import numbers

import numpy as np

from goracs.errors import GoracsError
from goracs.select.base import SelectionData


def check_int(name: str, value: object, low: int = 1) -> int:
    """``value`` as an int >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise GoracsError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_real(name: str, value: object, low: float = 0.0, high: float = np.inf,
               high_open: bool = False) -> float:
    """``value`` as a finite float in [low, high] (or [low, high) when ``high_open``)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    v = float(value) if ok else np.nan
    if not (np.isfinite(v) and low <= v and (v < high if high_open else v <= high)):
        bracket = ")" if high_open else "]"
        raise GoracsError(f"{name} must be a number in [{low}, {high}{bracket}, got {value!r}")
    return v


def check_source(name: str, value: object) -> str:
    """A score source: ``grad_norms`` or ``scores.<name>``."""
    if not isinstance(value, str) or not (
        value == "grad_norms" or (value.startswith("scores.") and len(value) > 7)
    ):
        raise GoracsError(f"{name} must be 'grad_norms' or 'scores.<name>', got {value!r}")
    return value


def score_from(data: SelectionData, source: str) -> np.ndarray:
    """The per-training-sample score a source names, as a 1-D float64 array."""
    arr = data.grad_norms if source == "grad_norms" else data.scores.get(source[7:])
    if arr is None:  # validate() has already caught this; kept for direct callers
        raise GoracsError(f"this method needs {source}")
    arr = np.asarray(arr)
    if arr.ndim != 1:
        raise GoracsError(f"{source} must be 1-D, got shape {arr.shape}")
    return arr.astype(np.float64)
