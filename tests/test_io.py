"""read_jsonl: JSON lines in, a clear GoracsError for a missing or malformed file."""

import numpy as np
import pytest

from goracs.errors import GoracsError
from goracs.io import load_array, read_jsonl


def test_read_jsonl_skips_blank_lines(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n\n  \n[2, 3]\n')
    assert read_jsonl(p) == [{"a": 1}, [2, 3]]


def test_read_jsonl_errors(tmp_path):
    with pytest.raises(GoracsError, match=r"file not found: .*missing.jsonl \(predictions\)"):
        read_jsonl(tmp_path / "missing.jsonl", "predictions")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{not json\n')
    with pytest.raises(GoracsError, match="not valid JSON lines") as err:
        read_jsonl(bad)
    assert "\n" not in str(err.value)


def test_an_npy_array_can_be_mapped_instead_of_read(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "a.npy", a)
    mapped = load_array(tmp_path / "a.npy", mmap=True)
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    np.testing.assert_array_equal(mapped, a)
    assert not isinstance(load_array(tmp_path / "a.npy"), np.memmap)
    np.save(tmp_path / "o.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(GoracsError, match="cannot read"):
        load_array(tmp_path / "o.npy", mmap=True)  # never unpickled, mapped or not
