"""The metrics committed under docs/runs and docs/results/evidence are what their predictions
give."""

import json
from pathlib import Path

import pytest

from goracs.evaluate.metrics import ctr_metrics, ranking_metrics

RUNS = Path(__file__).resolve().parents[2] / "docs" / "runs"
FOLDERS = sorted(p.parent for p in RUNS.glob("ml1m-*/metrics.json"))
# Likelihood-ranked SeqRec runs of the same adapters, kept apart from the main triples.
LIKELIHOOD = sorted(p.parent for p in RUNS.glob("likelihood-*/ml1m-*/metrics.json"))
# The evidence protocol's finished runs and reference rules, in the experiment's layout.
EVIDENCE_ROOT = RUNS.parent / "results" / "evidence"
# ... and the same adapters rescored against popularity-drawn negatives, one level deeper so
# that restoring the protocol's records leaves them out.
EVIDENCE = sorted(p.parent for pattern in ("*/*/*/metrics.json",
                                           "popularity-negatives/*/*/*/metrics.json")
                  for p in EVIDENCE_ROOT.glob(pattern)
                  if p.parent.parent.name in ("evaluate", "reference"))


def test_every_task_has_its_triple():
    names = {p.name for p in FOLDERS}
    for task in ("ctr", "seqrec"):
        assert {f"ml1m-{task}-{k}" for k in ("zeroshot", "random", "goracs")} <= names


def test_likelihood_runs_are_there():
    triple = {f"ml1m-seqrec-{k}" for k in ("zeroshot", "random", "goracs")}
    sets = sorted({p.parent for p in LIKELIHOOD})
    assert sets, "no likelihood-* folder"
    for folder in sets:     # every likelihood-* folder holds the whole triple, nothing else
        assert {p.name for p in LIKELIHOOD if p.parent == folder} == triple, folder.name
        assert (folder / "README.md").is_file(), folder.name


@pytest.mark.parametrize("folder", FOLDERS + LIKELIHOOD + EVIDENCE,
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_metrics_recompute_from_predictions(folder: Path):
    metrics = json.loads((folder / "metrics.json").read_text())
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    m = metrics["metrics"]
    assert len(rows) == (metrics.get("data") or {}).get("scored", len(rows))
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


@pytest.mark.parametrize("config", sorted(RUNS.glob("*.toml")), ids=lambda p: p.name)
def test_committed_configs_load(config: Path):
    from goracs.experiment.config_files import load_config

    cfg = load_config(str(config))
    assert cfg.tasks


def test_likelihood_config_reuses_the_grounding_triple(tmp_path: Path):
    """seqrec-256-likelihood.toml scores the adapters seqrec-256.toml trains: the two plans
    share every folder but the evaluation's."""
    from goracs.experiment.config_files import load_config
    from goracs.experiment.plan import build_plan

    def runs(name: str) -> dict[str, object]:
        groups = build_plan(load_config(str(RUNS / name)), tmp_path)
        return {r.method: r for g in groups for r in g.runs}

    a, b = runs("seqrec-256.toml"), runs("seqrec-256-likelihood.toml")
    assert set(a) == set(b) == {"zero-shot", "random", "goracs"}
    for method in a:
        assert (a[method].data_dir, a[method].select_dir, a[method].finetune_dir) == \
            (b[method].data_dir, b[method].select_dir, b[method].finetune_dir)
        assert a[method].eval_dir != b[method].eval_dir


def test_evidence_runs_score_one_sample_per_user():
    """Every committed evidence run of a task scored the same test samples, each from another
    user."""
    runs = [p for p in EVIDENCE if p.parent.name == "evaluate"]
    if not runs:
        pytest.skip("no evidence run committed yet")
    first: dict[str, list[int]] = {}
    for folder in runs:
        rows = [json.loads(x) for x in (folder / "predictions.jsonl").read_text().splitlines()]
        users = [r["user"] for r in rows]
        assert len(set(users)) == len(users), folder.name
        idx = [r["index"] for r in rows]
        group = folder.parent.parent.name  # DATASET-TASK
        assert idx == first.setdefault(group, idx), folder.name
