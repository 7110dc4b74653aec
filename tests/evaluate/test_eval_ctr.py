"""CTR scoring of a test set (on a tiny random Llama): each record's own P(Yes), in file order
whatever the batches, with the shared prefix or without, resumed from finished chunks."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from goracs.evaluate import ctr
from goracs.evaluate.chunks import SECONDS_FILE
from goracs.evaluate.context import EvalContext
from goracs.evaluate.metrics import ctr_metrics
from goracs.evaluate.settings import EvalSettings
from goracs.io import read_json
from goracs.records import ctr_labels, render_prompt

pytest.importorskip("torch")

INSTR = "Will the user like the target movie? Answer Yes or No."
RECORDS = [{"instruction": INSTR, "input": f"likes {a}; target {b}", "output": y,
            "user": str(u), "target": b}
           for u, (a, b, y) in enumerate([("Heat, Babe", "Casino", "Yes"),
                                          ("Fargo", "Balto and more", "No"),
                                          ("Nixon, Heat, Toy Story", "Babe", "Yes"),
                                          ("Se7en", "Othello", "No"),
                                          ("Clueless, Casino", "Heat", "No")])]


def _ctx(model: Any, tok: Any, tmp_path, **changes: Any) -> EvalContext:
    prompts = [render_prompt(r, False) for r in RECORDS]
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    ctx = EvalContext(model=model, tokenizer=tok, identity={}, records=RECORDS,
                      indices=np.array([2, 3, 5, 8, 13]), prompts=prompts, order=order,
                      work=tmp_path / "work", settings=EvalSettings(batch_size=2),
                      device="cpu", progress=False, share_prefix=False)
    return replace(ctx, **changes)


def test_each_record_gets_its_own_p_yes_in_file_order(tiny_llama, char_tokenizer, tmp_path):
    tok = char_tokenizer
    labels = ctr_labels(RECORDS)
    scored = ctr.score_ctr(_ctx(tiny_llama, tok, tmp_path), labels)
    yes, no = ctr.answer_token_ids(tok, RECORDS[0])
    want = [float(ctr.p_yes_batch(tiny_llama, tok, [render_prompt(r, False)], yes, no,
                                  "cpu")[0]) for r in RECORDS]
    got = [x["p_yes"] for x in scored.lines]
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    assert [x["index"] for x in scored.lines] == [2, 3, 5, 8, 13]
    assert [x["label"] for x in scored.lines] == [1, 0, 1, 0, 0]
    assert [x["target"] for x in scored.lines] == [r["target"] for r in RECORDS]
    assert list(scored.doc) == ["metrics", "answer_tokens"]
    assert scored.doc["metrics"] == ctr_metrics(labels, np.asarray(got))
    assert scored.doc["answer_tokens"] == {"Yes": yes, "No": no, "Yes_text": tok.decode([yes]),
                                           "No_text": tok.decode([no])}
    assert list(scored.seconds) == ["score"]

    shared = ctr.score_ctr(_ctx(tiny_llama, tok, tmp_path, work=tmp_path / "w2",
                                share_prefix=True), labels)
    np.testing.assert_allclose([x["p_yes"] for x in shared.lines], got, atol=1e-5, rtol=0)


def test_a_rerun_reuses_the_finished_chunks(tiny_llama, char_tokenizer, tmp_path,
                                            monkeypatch):
    labels = ctr_labels(RECORDS)
    first = ctr.score_ctr(_ctx(tiny_llama, char_tokenizer, tmp_path), labels)
    assert sorted(p.name for p in (tmp_path / "work" / "p_yes").iterdir())

    def no_pass(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a finished chunk was scored again")

    monkeypatch.setattr(ctr, "p_yes_batch", no_pass)
    monkeypatch.setattr(ctr, "reusable_prefix", no_pass)
    again = ctr.score_ctr(_ctx(tiny_llama, char_tokenizer, tmp_path, share_prefix=True),
                          labels)
    assert again.lines == first.lines and again.doc == first.doc
    # the resumed pass reports the seconds the first one spent on the chunks it read back
    spent = round(sum(read_json(tmp_path / "work" / "p_yes" / SECONDS_FILE).values()), 3)
    assert again.seconds.get("score_resumed", 0.0) == spent
    assert again.seconds["score"] >= spent
