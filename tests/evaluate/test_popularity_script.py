"""scripts/seqrec_popularity_baseline.py on a hand-made SeqRec folder."""

import json
from pathlib import Path

import pytest
from popularity_folder import write_popularity_folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_popularity_folder(tmp_path)


def test_counts_ranks_and_outputs(folder: Path, tmp_path: Path, capsys, load_script):
    mod = load_script("seqrec_popularity_baseline")
    out = tmp_path / "pop"
    assert mod.main([str(folder), "--out", str(out)]) == 0
    # HR@20 1; NDCG@10 = (1 + 1/log2(3) + 2 * 1/log2(4)) / 4
    ndcg = (1 + 1 / 1.5849625007211562 + 2 * 0.5) / 4
    assert f"| (whole test.json) | 4 | | {ndcg:.4f} | | 1.0000 | |" in capsys.readouterr().out
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["rank_sampled"] for r in rows] == [0, 1, 2, 2]
    assert [r["rank_full"] for r in rows] == [0, 2, 3, None]  # E is not in the catalogue
    assert [r["count"] for r in rows] == [3, 1, 0, 0]
    m = json.loads((out / "metrics.json").read_text())["metrics"]
    assert m["sampled"]["NDCG@10"] == pytest.approx(ndcg)
    assert m["full"]["HR@1"] == 0.25


def test_model_row_on_the_samples_it_scored(folder: Path, capsys, load_script):
    pred = folder / "predictions.jsonl"
    # the model ranks samples 0, 1, 2 the other way round from the rule (2, 1, 0): r = -1
    pred.write_text("".join(json.dumps({"index": i, "target": t, "rank_sampled": r}) + "\n"
                            for i, t, r in [(0, "A (1)", 2), (1, "C (3)", 1), (2, "D (4)", 0)]))
    assert load_script("seqrec_popularity_baseline").main([str(folder), str(pred)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "3" and cells[2] == cells[3] and cells[6] == "-1.00"


def test_predictions_of_another_folder_fail_in_one_line(folder: Path, capsys, load_script):
    pred = folder / "p.jsonl"
    pred.write_text(json.dumps({"index": 0, "target": "Z (9)", "rank_sampled": 0}) + "\n")
    assert load_script("seqrec_popularity_baseline").main([str(folder), str(pred)]) == 2
    err = capsys.readouterr().err
    assert "targets differ" in err and err.count("\n") == 1
