"""Checks of selector hyper-parameters and score sources, failing with one-line GoracsErrors.

Every selector (the GORACS engine and the baselines) checks its hyper-parameters with these in
``fit``, and at construction too, so that a bad value stops a command or an experiment config
before any work (see :class:`goracs.select.base.Selector`).
"""

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


def check_optional_int(name: str, value: object, low: int = 1) -> int | None:
    """``value`` as an int >= ``low``, or None (no limit)."""
    return None if value is None else check_int(name, value, low)


def check_real(name: str, value: object, low: float = 0.0, high: float = np.inf,
               high_open: bool = False) -> float:
    """``value`` as a finite float in [low, high] (or [low, high) when ``high_open``)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    v = float(value) if ok else np.nan
    if not (np.isfinite(v) and low <= v and (v < high if high_open else v <= high)):
        bracket = ")" if high_open else "]"
        raise GoracsError(f"{name} must be a number in [{low}, {high}{bracket}, got {value!r}")
    return v


def check_bool(name: str, value: object) -> bool:
    """``value`` when it is True or False."""
    if not isinstance(value, bool):
        raise GoracsError(f"{name} must be true or false, got {value!r}")
    return value


def check_choice(name: str, value: object, choices: tuple[str, ...], show: bool = False) -> str:
    """``value`` when it is one of ``choices`` (``show``: the message quotes the value too)."""
    if value not in choices:
        got = f", got {value!r}" if show else ""
        raise GoracsError(f"{name} must be one of {', '.join(choices)}{got}")
    return str(value)


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
    if arr is None:  # fit's data.validate() refuses this first; direct callers land here
        raise GoracsError(f"this method needs {source}")
    arr = np.asarray(arr)
    if arr.ndim != 1:
        raise GoracsError(f"{source} must be 1-D, got shape {arr.shape}")
    return arr.astype(np.float64)
