"""``goracs evaluate --rule``: the model-free references scored in the evaluation's format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from popularity_folder import write_popularity_folder

from goracs.cache import texts_digest
from goracs.cli import main
from goracs.evaluate.run import negatives_digest, sample_test_indices
from goracs.prompts import DOMAINS, ctr_record
from goracs.records import render_prompt

MOVIES = DOMAINS["movies"]


def _ctr_folder(d: Path, n: int = 40) -> Path:
    d.mkdir()
    recs = []
    for k in range(n):
        liked = [j < k % 5 for j in range(4)]  # 0-4 of 4 history titles liked
        recs.append(ctr_record(MOVIES, [f"H{j} (1)" for j in range(4)], liked, f"T{k} (2)",
                               k % 5 >= 2, f"u{k}", k))
    for name in ("train", "valid", "test"):
        (d / f"{name}.json").write_text(json.dumps(recs))
    (d / "meta.json").write_text(json.dumps({"task": "ctr", "dataset": "test"}))
    return d


def test_popularity_ranks_and_the_evaluation_format(tmp_path, capsys):
    d = write_popularity_folder(tmp_path / "data")
    out = tmp_path / "pop"
    assert main(["evaluate", "--data", str(d), "--rule", "popularity", "--out", str(out)]) == 0
    assert "popularity rule" in capsys.readouterr().out
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["rank_sampled"] for r in rows] == [0, 1, 2, 2]
    assert [r["rank_full"] for r in rows] == [0, 2, 3, None]  # E is not in the catalogue
    assert [r["user"] for r in rows] == ["t0", "t1", "t2", "t3"]
    doc = json.loads((out / "metrics.json").read_text())
    ndcg = (1 + 1 / 1.5849625007211562 + 2 * 0.5) / 4
    assert doc["metrics"]["sampled"]["NDCG@10"] == pytest.approx(ndcg)
    assert doc["rule"] == "popularity" and doc["model"] is None
    # the digest a model's evaluation of the same records records
    test = json.loads((d / "test.json").read_text())
    assert doc["data"]["test_digest"] == texts_digest([render_prompt(r, False) for r in test])
    assert doc["data"]["negatives_digest"] == negatives_digest(test)


def test_liked_share_on_the_records_a_model_evaluation_scores(tmp_path):
    d = _ctr_folder(tmp_path / "data")
    out = tmp_path / "rule"
    assert main(["evaluate", "--data", str(d), "--rule", "liked-share", "--max-test", "15",
                 "--seed", "3", "--out", str(out)]) == 0
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == sample_test_indices(40, 15, 3).tolist()
    for r in rows:  # (liked + 1) / (4 + 2), liked = index % 5 of the 4
        assert r["p_yes"] == pytest.approx((min(r["index"] % 5, 4) + 1) / 6)
        assert r["label"] == int(r["index"] % 5 >= 2)
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["data"]["scored"] == 15 and doc["settings"] == {"max_test": 15, "seed": 3}
    assert doc["metrics"]["AUC"] > 0.9  # the labels follow the liked share here


@pytest.mark.parametrize("extra,message", [
    (["--rule", "popularity"], "the popularity rule scores seqrec records; this folder's task "
                               "is ctr"),
    (["--rule", "liked-share", "--adapter", "somewhere"], "--rule scores no model; drop "
                                                          "--adapter"),
])
def test_bad_rule_use_is_one_line_and_exit_2(tmp_path, capsys, extra, message):
    d = _ctr_folder(tmp_path / "data")
    out = tmp_path / "out"
    assert main(["evaluate", "--data", str(d), *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_a_folder_not_ours_is_left_alone(tmp_path, capsys):
    d = _ctr_folder(tmp_path / "data")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["evaluate", "--data", str(d), "--rule", "liked-share", "--out",
                 str(out)]) == 2
    assert (out / "notes.txt").read_text() == "keep me"
    assert not (out / "metrics.json").exists()
