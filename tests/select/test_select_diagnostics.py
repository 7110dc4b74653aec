"""Method-neutral coreset figures: hand-worked cases."""

import numpy as np
import pytest

from goracs.errors import GoracsError
from goracs.select.diagnostics import coreset_stats


def test_a_coreset_that_is_the_validation_set_has_zero_transport_cost():
    rng = np.random.default_rng(0)
    valid = rng.normal(size=(6, 3))
    pool = np.vstack([rng.normal(size=(10, 3)) + 5.0, valid])
    stats = coreset_stats(np.arange(10, 16), pool, valid)
    assert stats["ot_to_valid"] == pytest.approx(0.0, abs=1e-6)
    assert stats["grad_norm_ratio"] is None and stats["positive_rate"] is None
    # any other coreset of the pool is farther away
    assert coreset_stats(np.arange(0, 6), pool, valid)["ot_to_valid"] > 1.0


def test_a_shifted_copy_costs_the_length_of_the_shift():
    valid = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    pool = valid + np.array([3.0, 4.0])  # far apart points: each maps to its own shifted copy
    assert coreset_stats(np.arange(4), pool, valid)["ot_to_valid"] == pytest.approx(5.0, rel=1e-6)
    # two points each split over two validation points: mean distance over the plan
    two = coreset_stats(np.array([0, 1]), valid, valid)["ot_to_valid"]
    assert two == pytest.approx(0.5 * 0 + 0.5 * 10.0, rel=1e-6)


def test_gradient_ratio_and_label_share():
    emb = np.arange(8, dtype=np.float64).reshape(4, 2)
    grads = np.array([1.0, 1.0, 3.0, 3.0])
    labels = np.array([0, 1, 1, 1])
    stats = coreset_stats(np.array([2, 3]), emb, emb, grads, labels)
    assert stats["grad_norm_ratio"] == pytest.approx(3.0 / 2.0)
    assert stats["positive_rate"] == pytest.approx(1.0)
    whole = coreset_stats(np.arange(4), emb, emb, grads, labels)
    assert whole["grad_norm_ratio"] == pytest.approx(1.0) and whole["positive_rate"] == 0.75
    assert whole["ot_to_valid"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("idx", [np.array([], dtype=np.int64), np.array([0, 4]),
                                 np.array([-1])])
def test_bad_indices_fail_in_one_line(idx):
    emb = np.zeros((4, 2))
    with pytest.raises(GoracsError):
        coreset_stats(idx, emb, emb)


# -- the diagnostics a selection carries ------------------------------------------------------

def test_selection_diagnostics_reads_the_data_and_needs_both_embeddings():
    from goracs.select import SelectionData
    from goracs.select.diagnostics import selection_diagnostics

    rng = np.random.default_rng(1)
    data = SelectionData(train_emb=rng.normal(size=(12, 3)), valid_emb=rng.normal(size=(4, 3)),
                         grad_norms=rng.uniform(1, 2, 12), train_labels=np.arange(12) % 2)
    idx = [1, 4, 7]
    assert selection_diagnostics(idx, data) == coreset_stats(
        np.array(idx), data.train_emb, data.valid_emb, data.grad_norms, data.train_labels)
    assert selection_diagnostics(idx, SelectionData(train_emb=data.train_emb)) == {}


def test_the_experiment_selection_stores_diagnostics_on_the_default_embeddings(tmp_path):
    """stages.select writes `diagnostics` into selection.json: the figures of the coreset on
    the folder's default embeddings, also for a row that selected on the LLM's; every other
    field is the manifest it wrote before."""
    import json

    from experiment_helpers import config, make_prepared

    from goracs.experiment import stages
    from goracs.experiment.plan import build_plan

    cfg = config(methods=["goracs", "goracs-llm", "random"], seeds=[0], zero_shot=False,
                 variants={"goracs-llm": {"method": "goracs", "embedding": "llm"}},
                 task_ctr={"features": {"embedding": "both"}})
    g = build_plan(cfg, tmp_path)[0]
    arrays = make_prepared(g.data_dir, cfg.tasks["ctr"].features)
    rng = np.random.default_rng(7)
    np.save(g.data_dir / "features" / "llm_train_emb.npy",
            rng.normal(size=(40, 5)).astype(np.float32))
    np.save(g.data_dir / "features" / "llm_valid_emb.npy",
            rng.normal(size=(10, 5)).astype(np.float32))
    data = stages.load_selection_data(g.data_dir)
    records = json.loads((g.data_dir / "train.json").read_text())
    for run in g.runs:
        if run.select_dir is None:
            continue
        stages.select(run, cfg.tasks["ctr"].params[run.method], data, records,
                      method=cfg.base_method(run.method), embedding=cfg.embedding(run.method))
        sel = json.loads((run.select_dir / "selection.json").read_text())
        # GORACS records who its validation set comes from; random does not look at it
        tail = ["coreset", "valid_users", "diagnostics"] if run.method != "random" \
            else ["coreset", "diagnostics"]
        assert list(sel)[-5 - len(tail):] == ["train_digest", "inputs", "scores", "data",
                                              "task", *tail]
        want = coreset_stats(np.array(sel["indices"]), arrays["train_emb"],
                             arrays["valid_emb"], arrays["grad_norms"], arrays["train_labels"])
        assert sel["diagnostics"] == want
        assert set(want) == {"ot_to_valid", "grad_norm_ratio", "positive_rate"}
        assert all(isinstance(x, float) for x in want.values())
        if run.method == "goracs-llm":
            assert sel["inputs"]["train_emb"].endswith("llm_train_emb.npy")
