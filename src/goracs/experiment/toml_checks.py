"""Generic checks of a parsed TOML document: known keys, value types, lists, positives.

Every failure is one :class:`GoracsError` line that names the key (``task.ctr.budgets: ...``);
``where`` is the dotted path of the table a key sits in ("" at the top). TOML has no null, so
the strings "none" and "all" stand for None where a field allows it.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

from goracs.errors import GoracsError


def unknown_keys(table: Mapping[str, Any], allowed: tuple[str, ...] | set[str],
                 where: str) -> None:
    """Refuse the first key of ``table`` that is not in ``allowed``."""
    for k in table:
        if k not in allowed:
            raise GoracsError(f"{join(where, k)}: unknown key (known: "
                              f"{', '.join(sorted(allowed))})")


def join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def sub_table(doc: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    """``doc[key]`` as a table (empty when absent)."""
    v = doc.get(key, {})
    if not isinstance(v, dict):
        raise GoracsError(f"{join(where, key)}: expected a table, got {type_name(v)}")
    return v


def type_name(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(v), type(v).__name__)


def is_none(v: Any) -> bool:
    return isinstance(v, str) and v.strip().lower() in ("none", "all")


def coerce(value: Any, hint: str, key: str) -> Any:
    """``value`` as the type a dataclass field hint names (``int | None``, ``tuple[str, ...]``);
    the strings "none" and "all" stand for None where None is allowed."""
    optional = "None" in hint
    base = hint.replace("| None", "").replace("None |", "").strip()
    if optional and is_none(value):
        return None
    if base == "bool":
        if isinstance(value, bool):
            return value
    elif base == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif base == "float":
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
    elif base == "str":
        if isinstance(value, str):
            return value
    elif base.startswith("tuple[str"):
        if isinstance(value, list) and all(isinstance(x, str) for x in value):
            return tuple(value)
        base = "a list of strings"
    else:  # a field type this module does not know: pass it through unchecked
        return value
    want = {"int": "an integer", "float": "a number", "str": "a string",
            "bool": "true or false"}.get(base, base)
    extra = ' or "none"' if optional else ""
    raise GoracsError(f"{key}: expected {want}{extra}, got {type_name(value)} {value!r}")


def build_settings(cls: type, table: Mapping[str, Any], where: str, base: Any = None,
                   exclude: tuple[str, ...] = ()) -> Any:
    """Build a settings dataclass from a config table, every key checked against its fields
    (``base``: the instance whose other fields are kept)."""
    names = {f.name: f for f in fields(cls)}
    allowed = tuple(n for n in names if n not in exclude)
    unknown_keys(table, allowed, where)
    kwargs = {k: coerce(v, str(names[k].type), join(where, k)) for k, v in table.items()}
    if base is not None:
        return replace(base, **kwargs)
    return cls(**kwargs)


def validated(obj: Any, where: str) -> Any:
    """``obj.validate()``, its error prefixed with ``where``."""
    try:
        return obj.validate()
    except GoracsError as exc:
        raise GoracsError(f"{where}: {exc}") from None


def positive(v: Any, key: str, allow_none: bool = False) -> None:
    if v is None and allow_none:
        return
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise GoracsError(f"{key}: must be a positive integer, got {v!r}")


def str_list(doc: Mapping[str, Any], key: str, where: str = "") -> list[str]:
    """A required non-empty list of distinct strings."""
    v = doc.get(key)
    k = join(where, key)
    if v is None:
        raise GoracsError(f"{k}: missing (a list of names)")
    if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
        raise GoracsError(f"{k}: expected a non-empty list of strings, got {v!r}")
    if len(set(v)) != len(v):
        raise GoracsError(f"{k}: names repeat in {v!r}")
    return v


def int_list(doc: Mapping[str, Any], key: str, where: str, positive: bool) -> tuple[int, ...]:
    """A required non-empty list of distinct integers (budgets when ``positive``)."""
    v = doc.get(key)
    k = join(where, key)
    if v is None:
        raise GoracsError(f"{k}: missing (a list of integers)")
    if not isinstance(v, list) or not v or not all(
            isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise GoracsError(f"{k}: expected a non-empty list of integers, got {v!r}")
    if positive:
        bad = [x for x in v if x < 1]
        if bad:
            raise GoracsError(f"{k}: budgets must be positive, got {bad[0]}")
    if len(set(v)) != len(v):
        raise GoracsError(f"{k}: values repeat in {v!r}")
    return tuple(v)


def non_negative(values: tuple[int, ...], key: str) -> None:
    bad = [v for v in values if v < 0]
    if bad:
        raise GoracsError(f"{key}: seeds must be 0 or more, got {bad[0]}")


def boolean(doc: Mapping[str, Any], key: str, default: bool) -> bool:
    v = doc.get(key, default)
    if not isinstance(v, bool):
        raise GoracsError(f"{key}: expected true or false, got {v!r}")
    return v


def string(doc: Mapping[str, Any], key: str, default: str) -> str:
    """A non-empty string (``default`` when absent)."""
    v = doc.get(key, default)
    if not isinstance(v, str) or not v.strip():
        raise GoracsError(f"{key}: expected a non-empty string, got {v!r}")
    return v
