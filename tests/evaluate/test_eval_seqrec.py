"""SeqRec evaluation (on a tiny random Llama): grounding ranks that recompute from the lines,
catalogue decoding that spells titles only, the likelihood route, and the catalogue's
description shared by both."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from goracs.evaluate import metrics as M
from goracs.evaluate.context import EvalContext
from goracs.evaluate.seqrec import evaluate_seqrec, target_title
from goracs.evaluate.settings import EvalSettings
from goracs.records import render_prompt

pytest.importorskip("torch")

TITLES = ["Babe (1995)", "Balto (1995)", "Casino (1995)", "Heat (1995)", "Nixon (1995)",
          "Heat (1995)"]


def _rec(history: list[str], target: str, negatives: list[str] | None) -> dict[str, Any]:
    hist = ", ".join(f'"{t}"' for t in history)
    rec = {"instruction": "Recommend a new movie the user likes.",
           "input": f"The user has watched: {hist}", "output": f'"{target}"', "user": "1",
           "target": target}
    if negatives is not None:
        rec["negatives"] = negatives
    return rec


RECORDS = [_rec(["Heat (1995)"], "Casino (1995)", ["Balto (1995)", "Nixon (1995)"]),
           _rec(["Babe (1995)"], "Unknown (2001)", ["Heat (1995)", "Other (1990)"]),
           _rec(["Nixon (1995)", "Babe (1995)"], "Heat (1995)", ["Balto (1995)",
                                                                 "Casino (1995)"])]


def _ctx(model: Any, tok: Any, tmp_path, records=RECORDS, **settings: Any) -> EvalContext:
    prompts = [render_prompt(r, False) for r in records]
    return EvalContext(model=model, tokenizer=tok,
                       identity={"model_files": "id:tiny", "adapter_files": None,
                                 "dtype": "fp32"},
                       records=records, indices=np.arange(len(records)) + 10, prompts=prompts,
                       order=sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i)),
                       work=tmp_path / "work", settings=EvalSettings(batch_size=2, **settings),
                       device="cpu", progress=False)


CATALOGUE = {"items": 6, "distinct_titles": 5, "targets_missing": 1, "negatives_per_sample": 2}


def test_grounding_ranks_recompute_from_the_lines(tiny_llama, decoding_tokenizer, tmp_path):
    cache = tmp_path / "cache"
    scored = evaluate_seqrec(_ctx(tiny_llama, decoding_tokenizer, tmp_path, max_new_tokens=4),
                             TITLES, cache)
    assert list(scored.doc) == ["catalogue", "metrics"]
    assert scored.doc["catalogue"] == CATALOGUE
    assert list(scored.seconds) == ["generate", "embed_titles", "embed_answers", "rank"]
    lines = scored.lines
    assert [x["index"] for x in lines] == [10, 11, 12]
    assert [x["target"] for x in lines] == ["Casino (1995)", "Unknown (2001)", "Heat (1995)"]
    assert lines[1]["rank_full"] is None
    assert all(0 <= x["rank_sampled"] <= 2 for x in lines)
    m = scored.doc["metrics"]
    assert m["sampled"] == M.ranking_metrics([x["rank_sampled"] for x in lines])
    assert m["full"] == M.ranking_metrics([x["rank_full"] for x in lines])
    assert m["distinct_answers"] == len({x["generated"] for x in lines})
    assert len(list(cache.glob("*.npy"))) == 1  # the catalogue's titles, cached


def test_catalogue_decoding_spells_catalogue_titles(tiny_llama, decoding_tokenizer, tmp_path,
                                                    capsys):
    ctx = _ctx(tiny_llama, decoding_tokenizer, tmp_path, max_new_tokens=20,
               decoding="catalogue")
    scored = evaluate_seqrec(ctx, TITLES, tmp_path / "cache")
    assert all(x["generated"] in TITLES for x in scored.lines)
    assert scored.doc["metrics"]["answer_in_catalogue"] == 1.0
    assert "note" not in capsys.readouterr().err
    short = replace(ctx, work=tmp_path / "w2", settings=replace(ctx.settings, max_new_tokens=3))
    evaluate_seqrec(short, TITLES, tmp_path / "cache")
    assert "answers cut short are grounded as text" in capsys.readouterr().err


def test_without_negatives_only_the_full_protocol_is_scored(tiny_llama, decoding_tokenizer,
                                                            tmp_path, capsys):
    records = [RECORDS[0], _rec(["Heat (1995)"], "Babe (1995)", None)]
    scored = evaluate_seqrec(_ctx(tiny_llama, decoding_tokenizer, tmp_path, records,
                                  max_new_tokens=3), TITLES, tmp_path / "cache")
    assert "the sampled protocol is skipped" in capsys.readouterr().err
    assert scored.doc["metrics"]["sampled"] is None
    assert scored.doc["catalogue"]["negatives_per_sample"] is None
    assert all(x["rank_sampled"] is None for x in scored.lines)


def test_the_likelihood_route_describes_the_same_catalogue(tiny_llama, decoding_tokenizer,
                                                           tmp_path):
    scored = evaluate_seqrec(_ctx(tiny_llama, decoding_tokenizer, tmp_path,
                                  ranking="likelihood"), TITLES, tmp_path / "cache")
    assert scored.doc["catalogue"] == CATALOGUE
    assert scored.doc["metrics"]["full"] is None and list(scored.seconds) == ["score"]
    assert all(x["rank_full"] is None and x["target_log_likelihood"] < 0
               for x in scored.lines)
    assert not (tmp_path / "cache").exists()  # no title is embedded


def test_the_target_title_is_the_target_or_the_unquoted_output():
    assert target_title({"target": "A (1990)", "output": '"B (1991)"'}) == "A (1990)"
    assert target_title({"output": ' "B (1991)" '}) == "B (1991)"
    assert target_title({"target": "", "output": '"C (1992)"'}) == "C (1992)"
