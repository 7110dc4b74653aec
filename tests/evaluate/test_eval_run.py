"""The evaluation run: the test subset, the run's key, where its resumable work lives, and the
dispatch by task to outputs written whole (on a tiny random Llama; no packaged model)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from goracs.errors import GoracsError
from goracs.evaluate import run
from goracs.evaluate.run import EvalSettings, sample_test_indices

TITLES = ["Babe (1995)", "Balto (1995)", "Casino (1995)", "Heat (1995)", "Nixon (1995)"]


def _seqrec(history: list[str], target: str, negatives: list[str]) -> dict[str, Any]:
    hist = ", ".join(f'"{t}"' for t in history)
    return {"instruction": "Recommend a new movie the user likes.",
            "input": f"The user has watched: {hist}", "output": f'"{target}"', "user": "1",
            "target": target, "negatives": negatives}


def test_test_subset_is_seeded_sorted_and_complete_when_large():
    a = sample_test_indices(100, 10, 0)
    assert np.array_equal(a, sample_test_indices(100, 10, 0))
    assert np.all(np.diff(a) > 0) and a.size == 10
    assert np.array_equal(sample_test_indices(5, 10, 0), np.arange(5))


def test_the_run_key_covers_task_settings_prompts_negatives_model_adapter_and_device():
    # the keys of earlier runs: their chunks stay resumable
    assert run._run_key("ctr", EvalSettings(), ["a", "bb"], None,
                        {"model_files": "files:m", "adapter_files": None}, "cpu") == \
        "6da5aecb0a0488f7944bf3cb"
    seq = (EvalSettings(max_test=5, ranking="likelihood"), ["a", "bb"])
    ident = {"model_files": "files:m", "adapter_files": "files:a"}
    assert run._run_key("seqrec", *seq, None, ident, "cuda") == "585cc8390178113bde94b417"
    # the same prompts ranked against other negatives: other chunks
    recs = [_seqrec(["Babe (1995)"], "Heat (1995)", ["Nixon (1995)"]),
            _seqrec(["Babe (1995)"], "Heat (1995)", ["Casino (1995)"])]
    digests = [run.negatives_digest([r]) for r in recs]
    assert digests[0] != digests[1] and run.negatives_digest([{"input": "x"}]) is None
    keys = {run._run_key("seqrec", *seq, d, ident, "cuda") for d in digests}
    assert len(keys) == 2 and "585cc8390178113bde94b417" not in keys


def test_chunks_left_inside_the_output_folder_move_to_the_partial_one(tmp_path):
    out, part = tmp_path / "ev", tmp_path / ".ev.goracs-partial"
    (out / ".work-k" / "p_yes").mkdir(parents=True)
    part.mkdir()
    work = run._work_folder(part, out, "k")
    assert work == part / ".work-k" and (work / "p_yes").is_dir()
    assert not (out / ".work-k").exists()
    assert run._work_folder(part, out, "other") == part / ".work-other"


@pytest.fixture
def tiny_model(monkeypatch, tiny_llama, decoding_tokenizer):
    """Make `evaluate` load the tiny random Llama with the character tokenizer."""
    identity = {"model": "tiny", "model_files": "id:tiny", "adapter": None,
                "adapter_files": None, "dtype": "fp32"}
    monkeypatch.setattr(run, "load_lm",
                        lambda *a, **k: (tiny_llama, decoding_tokenizer, identity))


def test_a_seqrec_evaluation_writes_predictions_that_recompute_its_metrics(tmp_path,
                                                                            tiny_model):
    from goracs.evaluate import metrics as M

    data = tmp_path / "data"
    data.mkdir()
    test = [_seqrec(["Heat (1995)"], "Casino (1995)", ["Balto (1995)", "Nixon (1995)"]),
            _seqrec(["Babe (1995)"], "Unknown (2001)", ["Heat (1995)", "Babe (1995)"]),
            _seqrec(["Nixon (1995)", "Babe (1995)"], "Heat (1995)", ["Balto (1995)",
                                                                     "Casino (1995)"])]
    (data / "test.json").write_text(json.dumps(test))
    (data / "items.json").write_text(json.dumps(TITLES))
    out = tmp_path / "ev"
    doc = run.evaluate(data, "seqrec", out, EvalSettings(batch_size=2, max_new_tokens=4),
                       device="cpu", progress=False, embedding_cache=tmp_path / "cache")
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "predictions.jsonl"]
    assert json.loads((out / "metrics.json").read_text()) == doc
    assert list(doc) == ["task", "model", "model_files", "adapter", "adapter_files", "data",
                         "settings", "catalogue", "metrics", "seconds"]
    assert list(doc["seconds"]) == ["load_model", "generate", "embed_titles", "embed_answers",
                                    "rank", "total"]
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [x["index"] for x in lines] == [0, 1, 2]
    assert lines[1]["rank_full"] is None and doc["catalogue"]["targets_missing"] == 1
    assert doc["metrics"]["sampled"] == M.ranking_metrics([x["rank_sampled"] for x in lines])
    assert doc["metrics"]["full"] == M.ranking_metrics([x["rank_full"] for x in lines])
    assert not [p for p in tmp_path.iterdir() if ".goracs-" in p.name]


def test_an_unknown_task_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "test.json").write_text(json.dumps([_seqrec([], "Heat (1995)", [])]))

    def no_model(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(run, "load_lm", no_model)
    with pytest.raises(GoracsError, match="task must be seqrec or ctr, got 'rank'"):
        run.evaluate(data, "rank", tmp_path / "ev", EvalSettings(), progress=False)
    with pytest.raises(GoracsError, match="record 0 output must be 'Yes' or 'No'"):
        run.evaluate(data, "ctr", tmp_path / "ev", EvalSettings(), progress=False)
