"""Likelihood ranking: the packed candidate sequence, its log-likelihoods against scoring each
answer alone on the real packaged model, and the ranking of a test set (tiny random Llama)."""

from dataclasses import replace

import numpy as np
import pytest

from goracs.evaluate.likelihood import candidate_tree


def test_candidate_tree_packs_answers_after_one_prompt():
    ids, pos, vis, rows, targets, owner = candidate_tree([10, 11, 12], [[20, 21, 22], [30]])
    # The prompt, then each answer without its last token (nothing to predict from it).
    assert ids.tolist() == [10, 11, 12, 20, 21]
    assert pos.tolist() == [0, 1, 2, 3, 4]
    # Answer tokens and the position whose output predicts each one.
    assert targets.tolist() == [20, 21, 22, 30]
    assert rows.tolist() == [2, 3, 4, 2]
    assert owner.tolist() == [0, 0, 0, 1]
    assert vis.tolist() == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
    ]


def test_candidate_tree_hides_answers_from_each_other_and_restarts_positions():
    ids, pos, vis, rows, targets, owner = candidate_tree([1, 2], [[5, 6], [7, 8, 9]])
    assert ids.tolist() == [1, 2, 5, 7, 8]
    assert pos.tolist() == [0, 1, 2, 2, 3]
    assert rows.tolist() == [1, 2, 1, 3, 4]
    # The second answer's tokens see the prompt and themselves, never the first answer.
    assert vis[3].tolist() == [True, True, False, True, False]
    assert vis[4].tolist() == [True, True, False, True, True]
    assert targets.tolist() == [5, 6, 7, 8, 9] and owner.tolist() == [0, 0, 1, 1, 1]


def test_candidate_tree_rejects_empty_inputs():
    with pytest.raises(ValueError, match="prompt"):
        candidate_tree([], [[1]])
    with pytest.raises(ValueError, match="answer"):
        candidate_tree([1], [[2], []])


@pytest.mark.slow
def test_packed_log_likelihoods_equal_scoring_each_answer_alone(smollm):
    torch = pytest.importorskip("torch")
    from goracs.evaluate.constrain import answer_tokens
    from goracs.evaluate.likelihood import alone_log_likelihood, answer_log_likelihoods

    lm, tok = smollm
    prompt = ('### Input:\nThe user has watched "Heat (1995)", "Casino (1995)"\n\n'
              "### Response:\n")
    answers = [a + [tok.eos_token_id] for a in answer_tokens(
        tok, prompt, ['"Fargo (1996)"', '"Toy Story (1995)"', '"Babe (1995)"', '"Heat (1995)"'])]
    got = answer_log_likelihoods(lm, tok, prompt, answers, "cpu")
    base = tok(prompt)["input_ids"]
    want = []
    for a in answers:
        ids = torch.tensor([base + a])
        with torch.no_grad():
            logp = torch.log_softmax(lm(input_ids=ids).logits[0].double(), dim=-1)
        want.append(sum(float(logp[len(base) - 1 + k, t]) for k, t in enumerate(a)))
    assert np.all(got < 0)
    alone = [alone_log_likelihood(lm, tok, prompt, a, "cpu") for a in answers]
    np.testing.assert_allclose(alone, want, atol=1e-3, rtol=0)
    np.testing.assert_allclose(got, want, atol=2e-3, rtol=0)
    assert len(set(np.round(got, 3))) == len(answers)


def _seqrec_record(target, negatives):
    return {"instruction": "Recommend a new movie the user likes.",
            "input": "The user has watched: \"Heat (1995)\"", "output": f'"{target}"',
            "target": target, "negatives": negatives}


def test_likelihood_ranking_ranks_each_target_among_its_negatives(tiny_llama, char_tokenizer,
                                                                  tmp_path):
    pytest.importorskip("torch")
    from goracs.errors import GoracsError
    from goracs.evaluate.constrain import answer_frame, answer_tokens
    from goracs.evaluate.context import EvalContext
    from goracs.evaluate.likelihood import answer_log_likelihoods, rank_by_likelihood
    from goracs.evaluate.metrics import rank_among_titles, ranking_metrics
    from goracs.evaluate.settings import EvalSettings
    from goracs.records import render_prompt

    tok = char_tokenizer
    records = [_seqrec_record("Casino (1995)", ["Balto (1995)", "Nixon (1995)", "Babe"]),
               _seqrec_record("Heat (1995)", ["Fargo (1996)", "Se7en (1995)"])]
    prompts = [render_prompt(r, False) for r in records]
    ctx = EvalContext(model=tiny_llama, tokenizer=tok, identity={}, records=records,
                      indices=np.array([4, 9]), prompts=prompts, order=[0, 1],
                      work=tmp_path / "w", settings=EvalSettings(), device="cpu",
                      progress=False)
    targets = [r["target"] for r in records]
    scored = rank_by_likelihood(ctx, targets)
    before, after = answer_frame(records)
    for j, (rec, line) in enumerate(zip(records, scored.lines, strict=True)):
        cands = [rec["target"], *rec["negatives"]]
        seqs = [a + [tok.eos_token_id] for a in
                answer_tokens(tok, prompts[j], [before + t + after for t in cands])]
        ll = answer_log_likelihoods(tiny_llama, tok, prompts[j], seqs, "cpu")
        assert line["rank_sampled"] == rank_among_titles(-ll, cands, rec["target"])
        assert line["target_log_likelihood"] == pytest.approx(ll[0], abs=1e-5)
        assert line["index"] == [4, 9][j] and line["rank_full"] is None
    assert scored.doc == {"metrics": {
        "sampled": ranking_metrics([x["rank_sampled"] for x in scored.lines]), "full": None}}

    bare = [_seqrec_record("Heat (1995)", [])]
    with pytest.raises(GoracsError, match="every test record needs a non-empty 'negatives'"):
        rank_by_likelihood(replace(ctx, records=bare, prompts=prompts[:1]), ["Heat (1995)"])
