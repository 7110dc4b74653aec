"""`goracs evaluate` interrupted and rerun, on a tiny random Llama (no packaged model): the
rerun resumes from the finished chunks kept beside the output folder and writes the same
predictions as an uninterrupted run; an earlier evaluation there is replaced whole."""

from __future__ import annotations

import json
from typing import Any

import pytest
from faults_helpers import prepared, snapshot

torch = pytest.importorskip("torch")




@pytest.fixture
def tiny_model(monkeypatch, char_tokenizer):
    """Make `evaluate` load a two-layer random Llama with the character tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from goracs.evaluate import run

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, initializer_range=0.2)
    model = LlamaForCausalLM(config).eval()
    identity = {"model": "tiny", "model_files": "id:tiny", "adapter": None,
                "adapter_files": None}
    monkeypatch.setattr(run, "load_lm", lambda *a, **k: (model, char_tokenizer, identity))
    return run


def _evaluate(run: Any, data, out, **settings: Any) -> dict[str, Any]:
    return run.evaluate(data, "ctr", out, run.EvalSettings(batch_size=1, **settings),
                        device="cpu", progress=False, share_prefix=False)


def test_an_interrupted_evaluation_resumes_to_the_same_predictions(tmp_path, capsys,
                                                                   tiny_model, monkeypatch):
    from goracs.evaluate import ctr

    run = tiny_model
    d = prepared(tmp_path, capsys)  # 10 test records: chunks of 8 and 2
    straight = tmp_path / "straight"
    _evaluate(run, d, straight)
    calls = {"n": 0}
    real = ctr.p_yes_batch

    def stop_in_the_second_chunk(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    out = tmp_path / "ev"
    monkeypatch.setattr(ctr, "p_yes_batch", stop_in_the_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        _evaluate(run, d, out)
    assert not out.exists()
    partial = tmp_path / ".ev.goracs-partial"
    assert len(list(partial.glob(".work-*/p_yes/chunk-*.npy"))) == 1
    calls["n"] = -100  # the rerun computes only the second chunk (two records)
    _evaluate(run, d, out)
    assert calls["n"] == -98
    assert (out / "predictions.jsonl").read_bytes() == \
        (straight / "predictions.jsonl").read_bytes()
    got = json.loads((out / "metrics.json").read_text())
    want = json.loads((straight / "metrics.json").read_text())
    assert got["metrics"] == want["metrics"]
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "predictions.jsonl"]
    assert not partial.exists()


def test_an_earlier_evaluation_is_replaced_whole(tmp_path, capsys, tiny_model):
    run = tiny_model
    d = prepared(tmp_path, capsys)
    out = tmp_path / "ev"
    _evaluate(run, d, out)
    (out / "run.json").write_text("{}")  # an experiment's record beside the metrics
    _evaluate(run, d, out, max_test=4)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "predictions.jsonl"]
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 4
    # a user's file there: refused before any work, the folder as it was
    (out / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    from goracs.errors import GoracsError

    with pytest.raises(GoracsError, match="holds notes.txt, which goracs did not write"):
        _evaluate(run, d, out)
    assert snapshot(tmp_path) == before
