"""The one input-checking layer every command goes through.

Numbers (finite, in range), seeds, arrays (rank and a real dtype, checked after the cast the
algorithm applies) and the nesting depth of JSON and TOML documents. Every check raises
:class:`goracs.errors.GoracsError` with one line naming the value and what it must be; the
``arg_*`` factories give the same checks as ``argparse`` types, so a bad flag is refused by
the parser (one line, exit 2) before any work starts.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from goracs.errors import GoracsError

#: Deepest nesting of lists and objects (tables) a JSON or TOML input may have. Records,
#: manifests and configs are a few levels deep; the limit only stops a hostile or broken file
#: before the parser's recursion does.
MAX_DEPTH = 100

_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


# -- numbers ---------------------------------------------------------------------------------

def number(value: Any, name: str, *, minimum: float | None = None,
           maximum: float | None = None, positive: bool = False) -> float:
    """Return ``value`` as a float after checking it is a finite real number in range.

    Parameters
    ----------
    value : Any
        The candidate; booleans and non-numbers are refused.
    name : str
        How the message names the value (a flag such as ``--lr``, or a config key).
    minimum, maximum : float, optional
        Inclusive bounds.
    positive : bool
        Require a value strictly above zero.

    Returns
    -------
    float
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise GoracsError(f"{name}: must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise GoracsError(f"{name}: must be a finite number, got {value}")
    if positive and v <= 0:
        raise GoracsError(f"{name}: must be a positive number, got {value}")
    if minimum is not None and v < minimum:
        raise GoracsError(f"{name}: must be at least {minimum:g}, got {value}")
    if maximum is not None and v > maximum:
        raise GoracsError(f"{name}: must be at most {maximum:g}, got {value}")
    return v


def integer(value: Any, name: str, *, minimum: int | None = None) -> int:
    """Return ``value`` as an int after checking it is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise GoracsError(f"{name}: must be an integer, got {value!r}")
    v = int(value)
    if minimum is not None and v < minimum:
        what = {0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer of at least {minimum}")
        raise GoracsError(f"{name}: must be {what}, got {v}")
    return v


def seed(value: Any, name: str = "seed") -> int:
    """A random seed: an integer >= 0 (numpy's generators refuse negative ones)."""
    return integer(value, name, minimum=0)


# -- argparse types --------------------------------------------------------------------------

def _arg(check: Callable[[str], Any]) -> Callable[[str], Any]:
    """Wrap a text check so its :class:`GoracsError` becomes argparse's one-line error."""
    def parse(text: str) -> Any:
        try:
            return check(text)
        except GoracsError as exc:
            # the parser prefixes the flag; keep only what follows our own "name: "
            raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[-1]) from None
    return parse


def _int_text(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise GoracsError(f"value: must be an integer, got {text!r}") from None


def _float_text(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise GoracsError(f"value: must be a number, got {text!r}") from None


def arg_int(minimum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``."""
    return _arg(lambda t: integer(_int_text(t), "value", minimum=minimum))


def arg_seed() -> Callable[[str], int]:
    """An argparse type: a seed (an integer >= 0)."""
    return _arg(lambda t: seed(_int_text(t), "value"))


def arg_float(*, minimum: float | None = None, positive: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number, optionally positive or at least ``minimum``."""
    return _arg(lambda t: number(_float_text(t), "value", minimum=minimum, positive=positive))


def arg_count_or_none(minimum: int) -> Callable[[str], int | None]:
    """An argparse type: an integer of at least ``minimum``, or none/all/inf for no limit."""
    def check(text: str) -> int | None:
        if text.strip().lower() in ("none", "all", "inf"):
            return None
        try:
            v = int(text)
        except ValueError:
            raise GoracsError(f"value: expected an integer or 'none', got {text!r}") from None
        return integer(v, "value", minimum=minimum)
    return _arg(check)


# -- arrays ----------------------------------------------------------------------------------

def real_array(arr: Any, name: str, *, ndim: int, dtype: type | np.dtype = np.float64,
               max_abs: float | None = None, non_negative: bool = False) -> np.ndarray:
    """Check an array's rank and kind, cast it the way the algorithm will, and check the
    result: finite values (and optionally bounded or non-negative ones).

    Parameters
    ----------
    arr : array_like
        The loaded array.
    name : str
        Its name in the message (a flag or file).
    ndim : int
        The rank it must have; a 0-d array is refused like any other wrong rank.
    dtype : numpy dtype
        The dtype the algorithm casts to. A floating cast is checked for NaN and inf *after*
        casting, so a float64 value too large for float32 is caught; an integer cast must
        lose nothing.
    max_abs : float, optional
        Largest absolute value accepted (after the cast).
    non_negative : bool
        Refuse negative values.

    Returns
    -------
    numpy.ndarray
        The cast array.
    """
    a = np.asarray(arr)
    if a.ndim != ndim:
        raise GoracsError(f"{name}: must be a {ndim}-D array, got shape {a.shape}"
                          + (" (a single number)" if a.ndim == 0 else ""))
    if a.size == 0:
        raise GoracsError(f"{name}: is empty (shape {a.shape})")
    kind = a.dtype.kind
    if kind not in "biuf":
        what = {"c": "complex", "O": "object", "U": "text", "S": "bytes", "V": "structured",
                "M": "datetime", "m": "timedelta"}.get(kind, str(a.dtype))
        raise GoracsError(f"{name}: must hold real numbers, got {what} values "
                          f"(dtype {a.dtype})")
    target = np.dtype(dtype)
    if target.kind in "iu":
        if kind == "f":
            if not np.isfinite(a).all() or not np.array_equal(a, np.round(a)):
                raise GoracsError(f"{name}: must hold whole numbers")
            info = np.iinfo(target)
            if a.min() < info.min or a.max() > info.max:
                raise GoracsError(f"{name}: values out of range for {target}")
        out = a.astype(target)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            out = a.astype(target)
        if not np.isfinite(out).all():
            # finite before the cast, not after: values beyond the target's range
            grew = kind != "f" or bool(np.isfinite(a).all())
            extra = f" once cast to {target} (values too large)" if grew else ""
            raise GoracsError(f"{name}: contains NaN or inf{extra}")
    if max_abs is not None and float(np.abs(out).max()) > max_abs:
        raise GoracsError(f"{name}: values reach {float(np.abs(out).max()):.3g}; at most "
                          f"{max_abs:.3g} is accepted")
    if non_negative and (out < 0).any():
        raise GoracsError(f"{name}: must be non-negative")
    return out


# -- nesting depth ---------------------------------------------------------------------------

def json_depth(text: str) -> int:
    """The deepest nesting of ``[`` and ``{`` in a JSON text, brackets inside strings
    excluded (computed without parsing, so a hostile file costs no recursion)."""
    if not any(c in text for c in "[{"):
        return 0
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    if not brackets:
        return 0
    codes = np.frombuffer(brackets.encode("ascii"), dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1).astype(np.int32)
    return int(np.cumsum(steps).max())


def check_json_depth(text: str, source: str, limit: int = MAX_DEPTH) -> None:
    """Refuse a JSON text nested deeper than ``limit`` levels, naming ``source``."""
    depth = json_depth(text)
    if depth > limit:
        raise GoracsError(f"{source}: nested {depth} levels deep; at most {limit} are read")


def nesting_depth(obj: Any) -> int:
    """The nesting depth of parsed lists and mappings, walked without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((c, depth + 1) for c in children)
    return deepest


def check_nesting(obj: Any, source: str, limit: int = MAX_DEPTH) -> Any:
    """Return ``obj`` after refusing a parsed document nested deeper than ``limit``."""
    depth = nesting_depth(obj)
    if depth > limit:
        raise GoracsError(f"{source}: nested {depth} levels deep; at most {limit} are read")
    return obj
