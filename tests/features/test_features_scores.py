"""EL2N and influence scores from the gradient-norm pass: definitions, boundaries, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from features_helpers import ctr_records, interrupt_at_call, seqrec_records

from goracs.errors import GoracsError
from goracs.features.gradnorms import GradNormScorer
from goracs.records import render_prompt, response_start, training_texts


def prompts(records):
    return [render_prompt(r, False) for r in records]


@pytest.fixture(scope="module")
def records():
    # SeqRec titles of several tokens and CTR one-word answers, in one pool: the shared
    # prefix then ends inside the Alpaca preamble.
    return seqrec_records(2) + ctr_records(1)


def direct_scores(model, param, ids, starts):
    """The definitions, one sample at a time through the model's own forward pass: EL2N from
    its logits in float64, influence from autograd gradients of each sample's loss."""
    el2n, grads = [], []
    for seq, s in zip(ids, starts, strict=True):
        x = torch.tensor([[int(t) for t in seq]])
        out = model(input_ids=x, labels=x)
        p = torch.softmax(out.logits[0, s - 1:-1].detach().double(), dim=-1)
        onehot = torch.nn.functional.one_hot(x[0, s:], p.shape[1]).double()
        el2n.append(float((p - onehot).norm(dim=1).mean()))
        (g,) = torch.autograd.grad(out.loss, param)
        grads.append(g.double().flatten())
    g = torch.stack(grads)
    influence = (g @ g.mean(dim=0) / len(ids)).numpy()
    return np.array(el2n), influence


def rel(a, b):
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - b) / np.abs(b).max()))


def test_response_start_is_the_common_prefix():
    assert response_start([5, 6, 7, 8, 9], [5, 6, 7]) == 3
    # A tokenizer that merges the prompt's last piece with the answer's first: the merged
    # token counts as response.
    assert response_start([5, 6, 70, 8, 9], [5, 6, 7]) == 2
    # max_length cut the answer off: the start is the end.
    assert response_start([5, 6, 7], [5, 6, 7, 8]) == 3


@pytest.mark.slow
def test_response_boundary_on_the_real_tokenizer(scoring_model, records):
    model, tok, _ = scoring_model
    scorer = GradNormScorer(model, tok)
    ids = scorer.tokenize(training_texts(records))
    starts = scorer.response_starts(prompts(records), ids)
    for rec, seq, s, p in zip(records, ids, starts, prompts(records), strict=True):
        assert s == len(tok(p)["input_ids"])
        assert tok.decode(seq[s:]) == rec["output"] + tok.eos_token
    # CTR's one-word answer is one token, then end-of-sequence.
    assert len(ids[2]) - starts[2] == 2
    # Cut inside the answer: what remains is the response; cut before it: nothing is.
    scorer.max_length = int(starts[0]) + 2
    cut_ids = scorer.tokenize(training_texts(records[:1]))
    assert scorer.response_starts(prompts(records[:1]), cut_ids).tolist() == [starts[0]]
    assert len(cut_ids[0]) == starts[0] + 2
    scorer.max_length = int(starts[0])
    none_ids = scorer.tokenize(training_texts(records))
    none_starts = scorer.response_starts(prompts(records), none_ids)
    assert none_starts[0] == len(none_ids[0])
    with pytest.raises(GoracsError, match="sample 0: max-length .* leaves no response token"):
        scorer.scores_from_ids(none_ids, none_starts, progress=False)


@pytest.mark.slow
def test_scores_match_their_definitions(scoring_model, records):
    model, tok, _ = scoring_model
    scorer = GradNormScorer(model, tok, batch_size=4)
    ids = scorer.tokenize(training_texts(records))
    starts = scorer.response_starts(prompts(records), ids)
    assert scorer.fast and scorer.shared_prefix_length(ids) > 0
    got = scorer.scores_from_ids(ids, starts, progress=False)
    el2n, influence = direct_scores(model, scorer.param, ids, starts)
    assert got.el2n.dtype == got.influence.dtype == np.float32
    assert rel(got.el2n, el2n) < 1e-5
    assert rel(got.influence, influence) < 1e-3
    # The scores ride along: the gradient norms are the very same numbers as without them.
    assert got.grad_norms.tobytes() == scorer.norms_from_ids(ids, progress=False).tobytes()
    # EL2N separates the samples far beyond the tolerance; CTR's "Yes"/"No" scores differ
    # from titles.
    assert el2n.max() - el2n.min() > 0.1
    # The model's own forward pass (no direct route) gives the same.
    scorer.fast = False
    plain = scorer.scores_from_ids(ids, starts, progress=False)
    assert rel(plain.el2n, el2n) < 1e-5 and rel(plain.influence, influence) < 1e-3


@pytest.mark.slow
def test_response_inside_the_shared_prefix(scoring_model, records):
    # Two copies of one sample share everything but the last token, so most of the answer
    # lies in the prefix that runs once.
    model, tok, _ = scoring_model
    scorer = GradNormScorer(model, tok, batch_size=2)
    ids = scorer.tokenize(training_texts(records[:1])) * 2
    starts = scorer.response_starts(prompts(records[:1]) * 2, ids)
    assert scorer.shared_prefix_length(ids) > starts[0]
    got = scorer.scores_from_ids(ids, starts, progress=False)
    el2n, influence = direct_scores(model, scorer.param, ids[:1], starts[:1])
    # Alone, gbar is the sample's own gradient; two copies halve the 1/N.
    assert rel(got.el2n, np.repeat(el2n, 2)) < 1e-5
    assert rel(got.influence, np.repeat(influence / 2, 2)) < 1e-3


@pytest.mark.slow
def test_interrupted_scoring_resumes_with_the_same_arrays(scoring_model, records, tmp_path,
                                                          monkeypatch):
    model, tok, identity = scoring_model
    scorer = GradNormScorer(model, tok, batch_size=2, shard_batches=1, identity=identity)
    ids = scorer.tokenize(training_texts(records))
    starts = scorer.response_starts(prompts(records), ids)
    whole = scorer.scores_from_ids(ids, starts, progress=False)

    real = scorer.batch_scores
    calls = interrupt_at_call(monkeypatch, scorer, 2)
    with pytest.raises(KeyboardInterrupt):
        scorer.scores_from_ids(ids, starts, cache_dir=tmp_path, progress=False)
    left = sorted(p.name for p in tmp_path.glob("gradnorms-*.parts/*.npy"))
    assert left == ["el2n-00000.npy", "grad-00000.npy", "shard-00000.npy"]

    calls.clear()
    monkeypatch.setattr(scorer, "batch_scores",
                        lambda seqs, st=None: (calls.append(len(seqs)), real(seqs, st))[1])
    resumed = scorer.scores_from_ids(ids, starts, cache_dir=tmp_path, progress=False)
    assert calls == [1]  # the first shard came from the cache
    for name in ("grad_norms", "el2n", "influence"):
        assert getattr(resumed, name).tobytes() == getattr(whole, name).tobytes(), name
    assert not list(tmp_path.glob("*.parts"))
    assert {p.name.split("-")[0] for p in tmp_path.glob("*.npy")} == {"gradnorms", "el2n",
                                                                       "influence"}
    calls.clear()
    again = scorer.scores_from_ids(ids, starts, cache_dir=tmp_path, progress=False)
    assert calls == [] and again.influence.tobytes() == whole.influence.tobytes()
    # The response starts are part of the key; norms alone are cached apart.
    assert scorer.cache_key(ids, starts) != scorer.cache_key(ids, starts + 1)
    assert scorer.cache_key(ids, starts) != scorer.cache_key(ids)
