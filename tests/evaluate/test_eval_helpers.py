"""Evaluation helpers that need no model: answer cleaning, resumable chunks."""

import time

import numpy as np

from goracs.evaluate.chunks import SECONDS_FILE, chunked
from goracs.evaluate.seqrec import clean_generation
from goracs.io import read_json


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
    assert first.resumed_seconds == 0.0
    (tmp_path / "w" / "chunk-00000003-00000006.npy").unlink()  # as if interrupted there
    calls.clear()
    again = chunked(7, 3, tmp_path / "w", compute, kind="npy", desc="t", progress=False)
    assert calls == [(3, 6)]
    assert np.array_equal(np.concatenate(first.values), np.concatenate(again.values))


def test_a_resumed_pass_counts_the_time_of_the_chunks_read_back(tmp_path):
    def compute(s, e):
        time.sleep(0.05)
        return np.arange(s, e, dtype=np.float64)

    chunked(7, 3, tmp_path / "w", compute, kind="npy", desc="t", progress=False)
    spent = read_json(tmp_path / "w" / SECONDS_FILE)
    assert sorted(spent) == ["chunk-00000000-00000003.npy", "chunk-00000003-00000006.npy",
                             "chunk-00000006-00000007.npy"]
    assert all(v >= 0.05 for v in spent.values())
    (tmp_path / "w" / "chunk-00000006-00000007.npy").unlink()
    again = chunked(7, 3, tmp_path / "w", compute, kind="npy", desc="t", progress=False)
    # the two chunks read back bring the seconds they took; the one computed again does not
    assert again.resumed_seconds == round(spent["chunk-00000000-00000003.npy"]
                                          + spent["chunk-00000003-00000006.npy"], 3)
