"""Evaluation helpers that need no model: test subsets, answer cleaning, resumable chunks."""

import numpy as np
import pytest

from goracs.errors import GoracsError
from goracs.evaluate.chunks import chunked
from goracs.evaluate.run import EvalSettings, sample_test_indices
from goracs.evaluate.seqrec import clean_generation


def test_test_subset_is_seeded_sorted_and_complete_when_large():
    a = sample_test_indices(100, 10, 0)
    assert np.array_equal(a, sample_test_indices(100, 10, 0))
    assert np.all(np.diff(a) > 0) and a.size == 10
    assert np.array_equal(sample_test_indices(5, 10, 0), np.arange(5))
    with pytest.raises(GoracsError):
        EvalSettings(num_beams=0).validate()


def test_clean_generation_keeps_the_first_answer_line():
    assert clean_generation(' "Heat (1995)"\n### Instruction: more') == "Heat (1995)"
    assert clean_generation("\n\n  Toy Story (1995)  ") == "Toy Story (1995)"
    assert clean_generation("   \n") == ""


def test_chunked_reuses_finished_chunks(tmp_path):
    calls = []

    def compute(s, e):
        calls.append((s, e))
        return np.arange(s, e, dtype=np.float64)

    first = chunked(7, 3, tmp_path / "w", compute, kind="npy", desc="t", progress=False)
    assert calls == [(0, 3), (3, 6), (6, 7)]
    (tmp_path / "w" / "chunk-00000003-00000006.npy").unlink()  # as if interrupted there
    calls.clear()
    again = chunked(7, 3, tmp_path / "w", compute, kind="npy", desc="t", progress=False)
    assert calls == [(3, 6)]
    assert np.array_equal(np.concatenate(first), np.concatenate(again))


def test_settings_reject_unknown_decoding_and_ranking():
    assert EvalSettings(decoding="catalogue", ranking="likelihood").validate()
    with pytest.raises(GoracsError, match="decoding must be one of free, catalogue"):
        EvalSettings(decoding="trie").validate()
    with pytest.raises(GoracsError, match="ranking must be one of grounding, likelihood"):
        EvalSettings(ranking="sum").validate()
