"""``goracs compare``: two arms of evaluations, compared on the same test users."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from popularity_folder import write_popularity_folder

from goracs.cli import main

EVIDENCE = Path(__file__).resolve().parents[2] / "docs" / "results" / "evidence"
CTR_RUNS = EVIDENCE / "ml-1m-ctr" / "evaluate"


def _arm(method: str) -> list[str]:
    runs = sorted(str(p) for p in CTR_RUNS.glob(f"{method}-b64-s*"))
    assert runs, method
    return runs


def test_it_gives_the_committed_vs_random_figures(capsys):
    """The evidence table's goracs row against random, recomputed from the committed runs."""
    assert main(["compare", "--baseline", *_arm("random"), "--candidate", *_arm("goracs"),
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    with (EVIDENCE / "results.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["task"] == "ctr" and r["method"] == "goracs"]
    assert len(rows) == 5 and doc["users"] == 1000 and doc["task"] == "ctr"
    for metric in ("AUC", "log_loss", "accuracy"):
        got = doc["metrics"][metric]
        want = [float(rows[0][f"{metric} vs random{s}"]) for s in ("", " lo", " hi")]
        assert [got["difference"], *got["interval"]] == pytest.approx(want, abs=1e-6)
    assert doc["metrics"]["AUC"]["verdict"] == "worse"
    assert doc["metrics"]["log_loss"]["verdict"] == "better"   # lower log-loss wins
    assert doc["metrics"]["AUC"]["sentence"].startswith("candidate loses to baseline on AUC")


def test_the_text_names_the_arms_and_says_who_wins(capsys):
    assert main(["compare", "--baseline", *_arm("random"), "--candidate", *_arm("goracs-llm"),
                 "--baseline-name", "random", "--candidate-name", "goracs-llm",
                 "--metric", "AUC", "--replicates", "300"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("goracs-llm (3 runs) against random (5 runs), ctr: 1,000 test")
    assert out[-1].startswith("goracs-llm loses to random on AUC: -0.13")


def _seqrec_run(folder: Path, ranks: list[int | None], full: bool = False) -> str:
    folder.mkdir()
    lines = [json.dumps({"index": i, "user": f"u{i}", "rank_sampled": r,  # 0 is the top
                         "rank_full": (r * 10 if r is not None else None) if full else None})
             for i, r in enumerate(ranks)]
    (folder / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    return str(folder)


def test_seqrec_metrics_and_protocols(tmp_path, capsys):
    n = 200
    worse = [_seqrec_run(tmp_path / f"a{s}", [(i + s) % 40 for i in range(n)])
             for s in range(2)]
    better = [_seqrec_run(tmp_path / f"b{s}", [(i + s) % 5 for i in range(n)])
              for s in range(2)]
    assert main(["compare", "--baseline", *worse, "--candidate", *better, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    # no full-catalogue ranks in these runs (likelihood ranking): the sampled protocol only
    assert list(doc["metrics"]) == ["sampled.NDCG@10", "sampled.HR@10", "sampled.NDCG@20"]
    hr = doc["metrics"]["sampled.HR@10"]
    assert hr["candidate"] == 1.0 and hr["baseline"] == pytest.approx(0.25)
    assert hr["verdict"] == "better" and hr["interval"][0] > 0
    full = [_seqrec_run(tmp_path / f"f{s}", [(i + s) % 5 for i in range(n)], full=True)
            for s in range(2)]
    assert main(["compare", "--baseline", *full, "--candidate", *full, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "full.NDCG@10" in doc["metrics"]
    assert doc["metrics"]["full.NDCG@10"]["verdict"] == "tie"
    assert doc["metrics"]["full.NDCG@10"]["difference"] == 0.0


@pytest.mark.parametrize("case,message", [
    ("missing", "no predictions.jsonl"),
    ("other-samples", "did not score the same test samples"),
    ("mixed", "mix CTR and SeqRec"),
    ("metric", "no paired comparison for ctr metric 'NDCG@10'"),
    ("level", "--level must be between 0 and 1"),
    ("not-predictions", "not predictions"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case, message):
    base = _arm("random")[:2]
    other = _arm("goracs")[:1]
    extra: list[str] = []
    if case == "missing":
        other = [str(tmp_path / "nowhere")]
    elif case == "other-samples":
        other = [_seqrec_run(tmp_path / "s", [1, 2, 3])]
        base = [_seqrec_run(tmp_path / "t", [1, 2, 3, 4])]
    elif case == "mixed":
        other = [_seqrec_run(tmp_path / "s", [1, 2, 3])]
    elif case == "metric":
        extra = ["--metric", "NDCG@10"]
    elif case == "level":
        extra = ["--level", "1.5"]
    else:
        bad = tmp_path / "p.jsonl"
        bad.write_text('{"a": 1}\n')
        other = [str(bad)]
    assert main(["compare", "--baseline", *base, "--candidate", *other, *extra]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert captured.out == ""


@pytest.mark.parametrize("change, message", [
    ("negatives", "different SeqRec negatives"),
    ("prompts", "different test prompts"),
])
def test_runs_on_another_test_folder_are_refused(tmp_path, capsys, change, message):
    """Prediction rows carry only indices: evaluations of two folders whose test records
    share the indices (another prepare seed or negative sampling) are told apart by the
    digests their metrics.json record."""
    a = write_popularity_folder(tmp_path / "a")
    b = write_popularity_folder(tmp_path / "b")
    test = json.loads((b / "test.json").read_text())
    if change == "negatives":
        test[0]["negatives"] = ["C (3)", "D (4)"]  # the same prompts, other negatives
    else:
        test[0]["input"] = test[0]["input"].replace("A (1)", "B (2)")
    (b / "test.json").write_text(json.dumps(test))
    runs = []
    for d in (a, b):
        out = tmp_path / f"rule-{d.name}"
        assert main(["evaluate", "--data", str(d), "--rule", "popularity", "--out",
                     str(out)]) == 0
        runs.append(str(out))
    capsys.readouterr()
    assert main(["compare", "--baseline", runs[0], "--candidate", runs[0]]) == 0
    capsys.readouterr()
    assert main(["compare", "--baseline", runs[0], "--candidate", runs[1]]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines

