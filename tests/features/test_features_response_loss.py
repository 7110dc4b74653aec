"""Gradient norms of the answer-only loss, and LLM prompt embeddings, on the real SmolLM2."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from features_helpers import ctr_records, seqrec_records
from reference_gradnorms import reference_norms

from goracs.errors import GoracsError
from goracs.features.gradnorms import GradNormScorer
from goracs.records import render_prompt, training_texts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pool():
    # CTR samples of different lengths (padding in every batch) and two SeqRec ones, whose
    # multi-token answers start at other offsets.
    return ctr_records(5) + seqrec_records(2)


def tokenized(scorer, records):
    ids = scorer.tokenize(training_texts(records))
    starts = scorer.response_starts([render_prompt(r, False) for r in records], ids)
    return ids, starts


def answer_norms(model, param, ids, starts):
    """The definition, one sample at a time: mean cross-entropy of the answer tokens under
    the model's own forward pass, one backward pass each."""
    out = []
    for seq, s in zip(ids, starts, strict=True):
        x = torch.tensor([[int(t) for t in seq]])
        logits = model(input_ids=x).logits[0]
        loss = torch.nn.functional.cross_entropy(logits[s - 1:-1].float(), x[0, s:])
        (g,) = torch.autograd.grad(loss, param)
        out.append(float(g.double().norm()))
    return np.array(out)


def rel(a, b):
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - b) / np.abs(b)))


def test_answer_loss_norms_match_their_definition(scoring_model, pool):
    model, tok, _ = scoring_model
    scorer = GradNormScorer(model, tok, batch_size=4, loss="response")
    ids, starts = tokenized(scorer, pool)
    assert scorer.fast and scorer.shared_prefix_length(ids) > 0
    got = scorer.scores_from_ids(ids, starts, progress=False)
    truth = answer_norms(model, scorer.param, ids, starts)
    assert rel(got.grad_norms, truth) < 1e-4
    # Every way of computing them agrees: no shared prefix, the model's own forward pass,
    # the reference's one-backward-per-sample procedure.
    plain = GradNormScorer(model, tok, batch_size=3, loss="response", share_prefix=False)
    assert rel(plain.scores_from_ids(ids, starts, progress=False).grad_norms, truth) < 1e-4
    plain.fast = False
    assert rel(plain.scores_from_ids(ids, starts, progress=False).grad_norms, truth) < 1e-4
    assert rel(reference_norms(scorer, ids, response_starts=starts), truth) < 1e-4
    # Not the whole-text norms: the answer-only loss ranks the samples differently.
    whole = GradNormScorer(model, tok, batch_size=4).norms_from_ids(ids, progress=False)
    assert rel(whole, truth) > 0.1
    # EL2N is the same number under either loss (it reads the answer rows only).
    text_scores = GradNormScorer(model, tok, batch_size=4).scores_from_ids(ids, starts,
                                                                          progress=False)
    assert np.allclose(got.el2n, text_scores.el2n, rtol=1e-5)


def test_answer_loss_needs_the_response_starts(scoring_model, pool):
    model, tok, _ = scoring_model
    scorer = GradNormScorer(model, tok, loss="response")
    ids, _ = tokenized(scorer, pool)
    with pytest.raises(GoracsError, match="response start"):
        scorer.scores_from_ids(ids, None, progress=False)
    with pytest.raises(GoracsError, match="loss must be one of"):
        GradNormScorer(model, tok, loss="prompt")


def test_llm_embeddings_are_mean_prompt_states(scoring_model, pool, tmp_path):
    model, tok, identity = scoring_model
    scorer = GradNormScorer(model, tok, batch_size=4, loss="response", identity=identity)
    ids, starts = tokenized(scorer, pool)
    got = scorer.scores_from_ids(ids, starts, progress=False, embed=True, scores=False)
    assert got.el2n is None and got.embeddings.shape == (len(pool), 576)
    truth = []
    with torch.no_grad():
        for seq, s in zip(ids, starts, strict=True):
            x = torch.tensor([[int(t) for t in seq]])
            h = model(input_ids=x, output_hidden_states=True).hidden_states[-1][0]
            truth.append(h[:s].double().mean(dim=0).numpy())
    truth = np.stack(truth)
    scale = np.abs(truth).max()
    assert np.abs(got.embeddings - truth).max() < 1e-4 * scale
    # The same norms with or without the embeddings riding along.
    alone = scorer.scores_from_ids(ids, starts, progress=False, scores=False)
    assert alone.grad_norms.tobytes() == got.grad_norms.tobytes()
    # The forward-only path gives the same vectors (validation samples take it), cached.
    fwd = scorer.embed_prompts(ids, starts, cache_dir=tmp_path, progress=False)
    assert np.abs(fwd - got.embeddings).max() < 1e-4 * scale
    assert len(list(tmp_path.glob("llmemb-valid-*.npy"))) == 1
    assert scorer.embed_prompts(ids, starts, cache_dir=tmp_path,
                                progress=False).tobytes() == fwd.tobytes()
    # Samples differ: the prompt states separate them.
    assert np.linalg.norm(truth[0] - truth[1]) > 1e-2 * np.linalg.norm(truth[0])
