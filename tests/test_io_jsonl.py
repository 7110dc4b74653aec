"""read_jsonl: JSON lines in, a clear GoracsError for a missing or malformed file."""

import pytest

from goracs.errors import GoracsError
from goracs.io import read_jsonl


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
