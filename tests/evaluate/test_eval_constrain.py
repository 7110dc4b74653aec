"""Catalogue-constrained decoding: the token trie, the answer frame, and the answer tokens on
the real packaged tokenizer."""

import pytest

from goracs.errors import GoracsError
from goracs.evaluate.constrain import TokenTrie, answer_frame, answer_tokens, catalogue_trie

END = 0


def _trie():
    # "ab" is a prefix of "abc": after [1, 2] both 3 and the end are admissible.
    return TokenTrie({"ab": [1, 2], "abc": [1, 2, 3], "ad": [1, 4], "x": [9]}, END)


def test_allowed_walks_the_tree_and_offers_the_end_after_a_whole_sequence():
    t = _trie()
    assert len(t) == 4
    assert t.allowed([]) == [1, 9]
    assert t.allowed([1]) == [2, 4]
    assert t.allowed([1, 2]) == [3, END]
    assert t.allowed([1, 2, 3]) == [END]
    assert t.allowed([9]) == [END]


def test_after_the_end_or_off_the_tree_only_the_end_is_allowed():
    t = _trie()
    assert t.allowed([1, 2, END]) == [END]
    assert t.allowed([1, 2, END, END, END]) == [END]   # a finished row being padded
    assert t.allowed([5]) == [END]
    assert t.allowed([1, 7, 3]) == [END]


def test_value_reads_the_sequence_up_to_the_end():
    t = _trie()
    assert t.value([1, 2, END, END]) == "ab"
    assert t.value([1, 2, 3, END]) == "abc"
    assert t.value([1, 2, 3]) == "abc"
    assert t.value([1]) is None            # cut short: no title
    assert t.value([END]) is None
    assert sorted(t.sequences()) == [(1, 2), (1, 2, 3), (1, 4), (9,)]


def test_trie_rejects_empty_and_clashing_sequences():
    with pytest.raises(GoracsError, match="no tokens"):
        TokenTrie({"a": []}, END)
    with pytest.raises(GoracsError, match="same tokens"):
        TokenTrie({"a": [1, 2], "b": [1, 2]}, END)


def _rec(output, target):
    return {"instruction": "i", "input": "", "output": output, "target": target}


def test_answer_frame_reads_the_text_around_the_target():
    assert answer_frame([_rec('"Heat (1995)"', "Heat (1995)"),
                         _rec('"Babe (1995)"', "Babe (1995)")]) == ('"', '"')
    assert answer_frame([_rec("Heat (1995)", "Heat (1995)")]) == ("", "")
    # A title that itself starts with a quote keeps its frame.
    assert answer_frame([_rec('""Great" Cats (1998)"', '"Great" Cats (1998)')]) == ('"', '"')


def test_answer_frame_rejects_missing_or_inconsistent_targets():
    with pytest.raises(GoracsError, match="no target"):
        answer_frame([{"instruction": "i", "input": "", "output": '"A"'}])
    with pytest.raises(GoracsError, match="does not contain"):
        answer_frame([_rec('"Heat (1995)"', "Babe (1995)")])
    with pytest.raises(GoracsError, match="one answer format"):
        answer_frame([_rec('"Heat (1995)"', "Heat (1995)"), _rec("Babe (1995)", "Babe (1995)")])
    with pytest.raises(GoracsError, match="no test records"):
        answer_frame([])


class _MergingTokenizer:
    """Splits into characters, except that a newline followed by a quote is one token."""

    eos_token_id = 99

    def __call__(self, text, add_special_tokens=True):
        def enc(s):
            out, i = [], 0
            while i < len(s):
                if s[i:i + 2] == '\n"':
                    out.append(1000)
                    i += 2
                else:
                    out.append(ord(s[i]))
                    i += 1
            return out
        if isinstance(text, list):
            return {"input_ids": [enc(t) for t in text]}
        return {"input_ids": enc(text)}


def test_answer_tokens_refuses_a_tokenizer_that_merges_across_the_prompt_end():
    tok = _MergingTokenizer()
    assert answer_tokens(tok, "P:\n", ["ab"]) == [[ord("a"), ord("b")]]
    with pytest.raises(GoracsError, match="merges the end of the prompt"):
        answer_tokens(tok, "P:\n", ['"ab"'])


def test_catalogue_trie_on_the_packaged_tokenizer_matches_the_training_tokens():
    pytest.importorskip("transformers")
    from goracs.lm import load_tokenizer
    from goracs.models import resolve_llm
    from goracs.records import render_prompt
    from goracs.train import encode_records

    tok = load_tokenizer(resolve_llm(None))
    titles = ["Haunting, The (1999)", "Heat (1995)", "Heat (1995)", "'burbs, The (1989)",
              '"Great Performances" Cats (1998)']
    recs = [{"instruction": "Recommend a movie.", "input": 'Watched: "Babe (1995)"',
             "output": f'"{t}"', "target": t} for t in titles]
    trie = catalogue_trie(tok, render_prompt(recs[0], False), titles, answer_frame(recs))
    assert len(trie) == 4          # one title shared by two items is one answer
    _, labels = encode_records(tok, recs, 512, "response")
    for t, lab in zip(titles, labels, strict=True):
        answer = [x for x in lab if x != -100]
        # Fine-tuning put the loss on the answer's tokens and the end of sequence: the trie
        # spells exactly those, so decoding follows what the model was taught.
        assert answer[-1] == tok.eos_token_id
        assert trie.value(answer) == t
        prefix: list[int] = []
        for x in answer:
            assert x in trie.allowed(prefix)
            prefix.append(x)
        assert trie.allowed(prefix) == [tok.eos_token_id]
