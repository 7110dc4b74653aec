"""The input-checking layer (goracs.checks, goracs.io): numbers, seeds, arrays after the cast,
JSON and TOML nesting. Every fault is one GoracsError line."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from goracs import checks
from goracs.errors import GoracsError
from goracs.io import loads_json, loads_json_or_lines, loads_toml, read_json, read_jsonl

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("value, kwargs, message", [
    (float("nan"), {}, "must be a finite number"),
    (float("inf"), {"positive": True}, "must be a finite number"),
    (0.0, {"positive": True}, "must be a positive number"),
    (-1e-9, {"minimum": 0}, "must be at least 0"),
    (2.0, {"maximum": 1}, "must be at most 1"),
    (True, {}, "must be a number"),
    ("1", {}, "must be a number"),
])
def test_numbers_are_finite_and_in_range(value, kwargs, message):
    with pytest.raises(GoracsError, match=f"^--x: {message}"):
        checks.number(value, "--x", **kwargs)


def test_good_numbers_pass_through():
    assert checks.number(3, "x", positive=True) == 3.0
    assert checks.integer(np.int64(4), "x", minimum=1) == 4
    assert checks.seed(0) == 0


@pytest.mark.parametrize("value, message", [
    (-1, "must be a non-negative integer, got -1"),
    (1.5, "must be an integer"),
    (False, "must be an integer"),
])
def test_seeds_are_integers_at_least_zero(value, message):
    with pytest.raises(GoracsError, match=message):
        checks.seed(value, "seed")


@pytest.mark.parametrize("factory, text, message", [
    (checks.arg_int(1), "0", "must be a positive integer, got 0"),
    (checks.arg_int(0), "-2", "must be a non-negative integer"),
    (checks.arg_int(2), "1", "must be an integer of at least 2"),
    (checks.arg_int(1), "x", "must be an integer, got 'x'"),
    (checks.arg_seed(), "-1", "must be a non-negative integer"),
    (checks.arg_float(positive=True), "inf", "must be a finite number"),
    (checks.arg_float(positive=True), "nan", "must be a finite number"),
    (checks.arg_float(minimum=0), "-0.5", "must be at least 0"),
    (checks.arg_float(), "ten", "must be a number"),
    (checks.arg_count_or_none(1), "0", "must be a positive integer"),
])
def test_argparse_types_say_what_the_flag_must_be(factory, text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=f"^{message}"):
        factory(text)


def test_count_or_none_takes_none():
    assert checks.arg_count_or_none(0)("none") is None
    assert checks.arg_count_or_none(0)("7") == 7


@pytest.mark.parametrize("arr, kwargs, message", [
    (np.float32(3.0), {"ndim": 1}, r"must be a 1-D array, got shape \(\) \(a single number\)"),
    (np.zeros((3, 2)), {"ndim": 1}, r"must be a 1-D array, got shape \(3, 2\)"),
    (np.zeros(0), {"ndim": 1}, "is empty"),
    (np.array([1 + 2j, 3j]), {"ndim": 1}, "must hold real numbers, got complex"),
    (np.array(["a", "b"]), {"ndim": 1}, "must hold real numbers, got text"),
    (np.array([1.0, np.nan]), {"ndim": 1}, "contains NaN or inf$"),
    (np.array([[1e300, 0.0]]), {"ndim": 2, "dtype": np.float32},
     "contains NaN or inf once cast to float32"),
    (np.array([[1e16, 0.0]]), {"ndim": 2, "dtype": np.float32, "max_abs": 1e15}, "at most"),
    (np.array([0.5, 1.0]), {"ndim": 1, "dtype": np.int64}, "must hold whole numbers"),
    (np.array([1e30, 1.0]), {"ndim": 1, "dtype": np.int64}, "out of range"),
    (np.array([-1.0, 1.0]), {"ndim": 1, "non_negative": True}, "must be non-negative"),
])
def test_arrays_are_checked_after_the_cast(arr, kwargs, message):
    with pytest.raises(GoracsError, match=message):
        checks.real_array(arr, "--a", **kwargs)


def test_arrays_come_back_cast():
    out = checks.real_array(np.array([1.0, 0.0, 2.0]), "x", ndim=1, dtype=np.int64)
    assert out.dtype == np.int64 and out.tolist() == [1, 0, 2]
    assert checks.real_array(np.array([True, False]), "x", ndim=1).dtype == np.float64


def test_json_depth_ignores_brackets_inside_strings():
    assert checks.json_depth(json.dumps([{"a": "[[[[{{{{", "b": "\\\"[["}])) == 2
    assert checks.json_depth("3") == 0
    assert checks.json_depth(DEEP) == 100_000


def test_deep_json_is_one_line_everywhere(tmp_path):
    for reader in (lambda: loads_json(DEEP, "x.json"),
                   lambda: loads_json_or_lines(DEEP, "x.json")):
        with pytest.raises(GoracsError, match=r"^x\.json: nested 100000 levels deep; at most "
                                              r"100 are read$"):
            reader()
    p = tmp_path / "deep.json"
    p.write_text(DEEP)
    with pytest.raises(GoracsError, match="nested 100000 levels deep"):
        read_json(p)
    p.write_text('{"a": 1}\n' + DEEP + "\n")
    with pytest.raises(GoracsError, match="line 2: nested 100000 levels deep"):
        read_jsonl(p)
    # depth 100 is read, 101 is not
    assert loads_json("[" * 100 + "]" * 100, "ok") is not None
    with pytest.raises(GoracsError, match="nested 101 levels"):
        loads_json("[" * 101 + "]" * 101, "x")


def test_deep_toml_is_one_line():
    with pytest.raises(GoracsError, match=r"^c\.toml: nested more than 100 levels deep$"):
        loads_toml("a = " + DEEP + "\n", "c.toml")
    with pytest.raises(GoracsError, match=r"^c\.toml: nested 101 levels deep"):
        loads_toml("a = " + "[" * 100 + "1" + "]" * 100 + "\n", "c.toml")
    with pytest.raises(GoracsError, match=r"^c\.toml: not valid TOML"):
        loads_toml("a = [1,\n", "c.toml")
    assert loads_toml("a = [[1]]\n[b]\nc = 2\n", "c.toml") == {"a": [[1]], "b": {"c": 2}}


@pytest.mark.parametrize("content, message", [
    (b"", "not valid JSON"),
    (b'[{"instruction": "i", "inp', "not valid JSON"),
    (b"\xff\xfe\x00garbage", "not UTF-8 text"),
])
def test_truncated_or_binary_json_is_one_line(tmp_path, content, message):
    p = tmp_path / "f.json"
    p.write_bytes(content)
    with pytest.raises(GoracsError, match=message) as info:
        read_json(p)
    assert "\n" not in str(info.value)
