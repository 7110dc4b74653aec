"""The metrics committed under docs/runs are what their predictions give."""

import json
from pathlib import Path

import pytest

from goracs.evaluate.metrics import ctr_metrics, ranking_metrics

RUNS = Path(__file__).resolve().parents[2] / "docs" / "runs"
FOLDERS = sorted(p.parent for p in RUNS.glob("ml1m-*/metrics.json"))
# Likelihood-ranked SeqRec runs of the same adapters, kept apart from the main triples.
LIKELIHOOD = sorted(p.parent for p in RUNS.glob("likelihood-*/ml1m-*/metrics.json"))


def test_every_task_has_its_triple():
    names = {p.name for p in FOLDERS}
    for task in ("ctr", "seqrec"):
        assert {f"ml1m-{task}-{k}" for k in ("zeroshot", "random", "goracs")} <= names


def test_likelihood_runs_are_there():
    assert {p.name for p in LIKELIHOOD} == {f"ml1m-seqrec-{k}"
                                            for k in ("zeroshot", "random", "goracs")}


@pytest.mark.parametrize("folder", FOLDERS + LIKELIHOOD,
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_metrics_recompute_from_predictions(folder: Path):
    metrics = json.loads((folder / "metrics.json").read_text())
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    m = metrics["metrics"]
    if metrics["task"] == "ctr":
        got = ctr_metrics([r["label"] for r in rows], [r["p_yes"] for r in rows])
        for key in ("AUC", "log_loss", "accuracy"):
            assert got[key] == pytest.approx(m[key], abs=1e-9)
    else:
        for proto in ("sampled", "full"):
            if m[proto] is None:     # a protocol the run left out (likelihood: full)
                assert all(r[f"rank_{proto}"] is None for r in rows)
                continue
            got = ranking_metrics([r[f"rank_{proto}"] for r in rows])
            assert got == pytest.approx(m[proto], abs=1e-9)
