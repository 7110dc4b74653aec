"""Evaluation helpers that need no model: answer cleaning, resumable chunks."""

import numpy as np

from goracs.evaluate.chunks import chunked
from goracs.evaluate.seqrec import clean_generation


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
