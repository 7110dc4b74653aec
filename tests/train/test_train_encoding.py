"""Encoding records for training: loss labels, the loss-token count and padded micro-batches."""

import pytest

from goracs.records import render_prompt
from goracs.train import encode_records
from goracs.train.encoding import IGNORE, Encoded, loss_tokens, pad

REC = {"instruction": "Say Yes or No.", "input": "likes a; target b", "output": "Yes"}


def test_response_loss_labels_the_answer_and_its_end_only(char_tokenizer):
    tok = char_tokenizer
    n = len(tok(render_prompt(REC, False))["input_ids"])
    (ids,), (labels,) = encode_records(tok, [REC], 512, "response")
    assert ids == tok(render_prompt(REC, True))["input_ids"] + [tok.eos_token_id]
    assert labels == [IGNORE] * n + ids[n:]
    assert loss_tokens(labels) == len("Yes") + 1
    full_ids, full_labels = encode_records(tok, [REC], 512, "full")
    assert full_ids == [ids] and full_labels == [ids]


def test_an_answer_beyond_the_cutoff_leaves_no_loss_token(char_tokenizer):
    tok = char_tokenizer
    n = len(tok(render_prompt(REC, False))["input_ids"])
    enc = Encoded(*encode_records(tok, [REC, REC], n, "response"))
    assert len(enc.ids[0]) == n and enc.loss_tokens() == 0
    assert enc.without_answer() == 2
    enc = Encoded(*encode_records(tok, [REC], n + 2, "response"))
    assert enc.loss_tokens() == 2 and enc.without_answer() == 0


def test_loss_tokens_skip_the_first_label_and_ignored_ones():
    assert loss_tokens([5, 6, 7]) == 2
    assert loss_tokens([IGNORE, IGNORE, 7, 8]) == 2
    assert loss_tokens([9]) == 0
    enc = Encoded([[1, 2, 3], [4]], [[IGNORE, 2, 3], [4]])
    assert enc.loss_tokens() == 2 and enc.loss_tokens([1]) == 0 and enc.without_answer() == 1


def test_micro_batches_pad_on_the_right():
    pytest.importorskip("torch")
    assert pad([[1, 2], [3]], 9).tolist() == [[1, 2], [3, 9]]
    enc = Encoded([[1, 2, 3], [4]], [[IGNORE, 2, 3], [4]])
    b = enc.micro_batch([1, 0], pad_id=0, device="cpu")
    assert b["input_ids"].tolist() == [[4, 0, 0], [1, 2, 3]]
    assert b["attention_mask"].tolist() == [[1, 0, 0], [1, 1, 1]]
    assert b["labels"].tolist() == [[4, IGNORE, IGNORE], [IGNORE, 2, 3]]
