"""Scoring from the shared prompt prefix: the same P(Yes) and log-likelihoods as plain passes,
on a tiny random Llama (fast) and on the real packaged SmolLM2 with real ML-1M records (slow),
and plain scoring when the cache cannot be reused."""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
import pytest

from goracs.evaluate.prefix import common_prefix_length

torch = pytest.importorskip("torch")

HEAD = "### Instruction:\nSay Yes or No.\n\n### Input:\n"
PROMPTS = [HEAD + "likes a, b; target c\n\n### Response:\n",
           HEAD + "likes dd, eee, f, g, hh; target iii\n\n### Response:\n",
           HEAD + "x\n\n### Response:\n",
           HEAD + "likes zz; target yyyy, then more text\n\n### Response:\n"]
YES, NO = 10, 11




@pytest.fixture(scope="module")
def tiny() -> Any:
    """A two-layer random Llama, weights large enough that P(Yes) moves with the input."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, initializer_range=0.2)
    return LlamaForCausalLM(config).eval()


def test_common_prefix_length_keeps_one_shared_token_per_sequence():
    assert common_prefix_length([[1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 8]]) == 5
    # A sequence that is all prefix still keeps its last token for the pass after it.
    assert common_prefix_length([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6, 7]]) == 5
    assert common_prefix_length([[1, 2, 3, 4, 5, 9], [1, 2, 3, 4, 5, 8]], min_tokens=4) == 4
    assert common_prefix_length([[1, 2, 3, 4, 9], [1, 2, 3, 4, 8]], min_tokens=4) == 0
    assert common_prefix_length([[7, 1, 2, 3, 4, 5], [8, 1, 2, 3, 4, 5]]) == 0
    assert common_prefix_length([]) == 0
    assert common_prefix_length([[1, 2, 3, 4, 5, 6]]) == 5


def test_p_yes_from_the_prefix_equals_plain_batches_of_any_length(tiny, char_tokenizer):
    from goracs.evaluate.ctr import p_yes_batch, reusable_prefix

    tok = char_tokenizer
    prefix = reusable_prefix(tiny, tok, PROMPTS, YES, NO, "cpu")
    assert prefix is not None and len(prefix) == len(tok(HEAD)["input_ids"]) - 1
    for batch in (PROMPTS, PROMPTS[:1], PROMPTS[1:3], PROMPTS[::-1]):
        want = p_yes_batch(tiny, tok, batch, YES, NO, "cpu")
        got = p_yes_batch(tiny, tok, batch, YES, NO, "cpu", prefix)
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    assert np.ptp(want) > 0.05  # the inputs matter, so equal scores mean something
    # The stored states are views that a pass never overwrites: the same scores again.
    again = p_yes_batch(tiny, tok, PROMPTS[::-1], YES, NO, "cpu", prefix)
    np.testing.assert_array_equal(again, got)
    # A batch that does not start with the prefix is scored whole.
    other = ["Another template: x\n", "Another one: yy\n"]
    np.testing.assert_array_equal(p_yes_batch(tiny, tok, other, YES, NO, "cpu", prefix),
                                  p_yes_batch(tiny, tok, other, YES, NO, "cpu"))


def test_prefix_runs_through_the_adapter(tiny, char_tokenizer):
    import copy

    from peft import LoraConfig, get_peft_model

    from goracs.evaluate.ctr import p_yes_batch, reusable_prefix

    tok = char_tokenizer
    torch.manual_seed(1)
    with warnings.catch_warnings():  # peft calls a helper transformers 5 marks deprecated
        warnings.simplefilter("ignore", FutureWarning)
        tuned = get_peft_model(copy.deepcopy(tiny), LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj"])).eval()
    for name, p in tuned.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0.0, 0.2)
    prefix = reusable_prefix(tuned, tok, PROMPTS, YES, NO, "cpu")
    assert prefix is not None
    want = p_yes_batch(tuned, tok, PROMPTS, YES, NO, "cpu")
    np.testing.assert_allclose(p_yes_batch(tuned, tok, PROMPTS, YES, NO, "cpu", prefix), want,
                               atol=1e-6, rtol=0)
    # The adapter changes the scores, the prefix's keys and values included.
    base = reusable_prefix(tiny, tok, PROMPTS, YES, NO, "cpu")
    assert not torch.allclose(prefix.kv[0][0], base.kv[0][0])
    assert np.max(np.abs(want - p_yes_batch(tiny, tok, PROMPTS, YES, NO, "cpu"))) > 1e-3


def test_packed_likelihoods_from_the_prefix_equal_plain(tiny, char_tokenizer):
    from goracs.evaluate.likelihood import answer_log_likelihoods, likelihood_prefix

    tok = char_tokenizer
    answers = [[5, 6, 7, 2], [8, 2], [9, 9, 9, 9, 9, 2]]
    prefix = likelihood_prefix(tiny, tok, PROMPTS, PROMPTS[1], answers, "cpu")
    assert prefix is not None
    for prompt in PROMPTS:
        want = answer_log_likelihoods(tiny, tok, prompt, answers, "cpu")
        got = answer_log_likelihoods(tiny, tok, prompt, answers, "cpu", prefix)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
        assert len(set(np.round(want, 3))) == len(answers)


def test_a_cache_that_misplaces_the_prefix_falls_back_to_plain(tiny, char_tokenizer, monkeypatch,
                                                               capsys):
    from goracs.evaluate import prefix as P
    from goracs.evaluate.ctr import reusable_prefix
    from goracs.evaluate.likelihood import likelihood_prefix

    tok = char_tokenizer
    made = P.SharedPrefix.cache

    def shifted(self: P.SharedPrefix, batch: int) -> Any:
        cache = made(self, batch)
        for layer in cache.layers:  # each key one position off
            layer.keys = torch.cat([layer.keys[:, :, 1:], layer.keys[:, :, -1:]], dim=2)
        return cache

    monkeypatch.setattr(P.SharedPrefix, "cache", shifted)
    assert reusable_prefix(tiny, tok, PROMPTS, YES, NO, "cpu") is None
    assert "P(Yes) from the cache differs from a plain pass" in capsys.readouterr().err
    assert likelihood_prefix(tiny, tok, PROMPTS, PROMPTS[0], [[5, 6, 2], [7, 2]], "cpu") is None
    assert "log-likelihoods from the cache differ" in capsys.readouterr().err

    def broken(self: P.SharedPrefix, batch: int) -> Any:
        raise AttributeError("this cache has no layers")

    monkeypatch.setattr(P.SharedPrefix, "cache", broken)
    assert reusable_prefix(tiny, tok, PROMPTS, YES, NO, "cpu") is None
    assert "cannot continue from a copied key/value cache" in capsys.readouterr().err


def test_prompts_that_share_too_little_get_no_prefix(tiny, char_tokenizer, capsys):
    from goracs.evaluate.ctr import reusable_prefix

    tok = char_tokenizer
    assert reusable_prefix(tiny, tok, ["abc long prompt", "abd other prompt"], YES, NO,
                           "cpu") is None
    assert reusable_prefix(tiny, tok, [], YES, NO, "cpu") is None
    assert capsys.readouterr().err == ""


# -- the real packaged model on real ML-1M records ---------------------------------------

@pytest.mark.slow
def test_real_p_yes_from_the_prefix_equals_plain(smollm, ml1m_test_records):
    from goracs.evaluate.ctr import answer_token_ids, p_yes_batch, reusable_prefix
    from goracs.evaluate.run import sample_test_indices
    from goracs.records import render_prompt

    lm, tok = smollm
    test = ml1m_test_records("ctr")
    records = [test[i] for i in sample_test_indices(len(test), 6, 0)]
    prompts = [render_prompt(r, False) for r in records]
    yes, no = answer_token_ids(tok, records[0])
    prefix = reusable_prefix(lm, tok, prompts, yes, no, "cpu")
    assert prefix is not None and len(prefix) >= 60  # preamble, instruction, input's start
    lengths = [len(e) for e in tok(prompts)["input_ids"]]
    assert len(set(lengths)) > 1  # rows are padded
    # Batches of 2, 1 and 3 prompts of different token lengths.
    for batch in (prompts[:2], prompts[2:3], prompts[3:]):
        want = p_yes_batch(lm, tok, batch, yes, no, "cpu")
        got = p_yes_batch(lm, tok, batch, yes, no, "cpu", prefix)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_real_evaluation_with_an_adapter_is_the_same_with_and_without_the_prefix(
        tmp_path, smollm, ml1m_test_records):
    from peft import LoraConfig, get_peft_model

    from goracs.evaluate.ctr import answer_token_ids, p_yes_batch
    from goracs.evaluate.run import EvalSettings, evaluate
    from goracs.lm import load_lm
    from goracs.records import render_prompt

    lm, _, _ = load_lm(None, None)
    torch.manual_seed(0)
    with warnings.catch_warnings():  # peft calls a helper transformers 5 marks deprecated
        warnings.simplefilter("ignore", FutureWarning)
        tuned = get_peft_model(lm, LoraConfig(r=8, lora_alpha=16,
                                              target_modules=["q_proj", "v_proj"]))
    for name, p in tuned.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0.0, 0.02)
    tuned.save_pretrained(tmp_path / "adapter")
    data = tmp_path / "data"
    data.mkdir()
    records = ml1m_test_records("ctr")[:6]
    (data / "test.json").write_text(json.dumps(records))
    # Batches of 4 and 2 prompts of several token lengths.
    settings = EvalSettings(batch_size=4)
    runs = {}
    for share in (True, False):
        doc = evaluate(data, "ctr", tmp_path / f"out-{share}", settings,
                       adapter=tmp_path / "adapter", device="cpu", progress=False,
                       share_prefix=share)
        rows = (tmp_path / f"out-{share}" / "predictions.jsonl").read_text().splitlines()
        runs[share] = (doc, np.array([json.loads(r)["p_yes"] for r in rows]))
    np.testing.assert_allclose(runs[True][1], runs[False][1], atol=1e-4, rtol=0)
    for key in ("AUC", "log_loss", "accuracy"):
        assert runs[True][0]["metrics"][key] == pytest.approx(runs[False][0]["metrics"][key],
                                                              abs=1e-4)
    # The adapter was used: its scores differ from the base model's.
    base_lm, tok = smollm
    base = p_yes_batch(base_lm, tok, [render_prompt(r, False) for r in records],
                       *answer_token_ids(tok, records[0]), "cpu")
    assert np.max(np.abs(base - runs[True][1])) > 1e-3


@pytest.mark.slow
def test_real_packed_likelihoods_from_the_prefix_equal_plain(smollm, ml1m_test_records):
    from goracs.evaluate.constrain import answer_frame, answer_tokens
    from goracs.evaluate.likelihood import answer_log_likelihoods, likelihood_prefix
    from goracs.records import render_prompt

    lm, tok = smollm
    records = ml1m_test_records("seqrec")[:2]
    prompts = [render_prompt(r, False) for r in records]
    before, after = answer_frame(records)
    eos = int(tok.eos_token_id)

    def answers(k: int) -> list[list[int]]:
        titles = [records[k]["target"], *records[k]["negatives"][:9]]
        return [a + [eos] for a in answer_tokens(tok, prompts[k], [before + t + after
                                                                   for t in titles])]

    prefix = likelihood_prefix(lm, tok, prompts, prompts[0], answers(0)[:3], "cpu")
    assert prefix is not None and len(prefix) >= 60
    for k in range(len(records)):
        want = answer_log_likelihoods(lm, tok, prompts[k], answers(k), "cpu")
        got = answer_log_likelihoods(lm, tok, prompts[k], answers(k), "cpu", prefix)
        np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)
