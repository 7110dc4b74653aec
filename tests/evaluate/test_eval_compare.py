"""Paired comparisons of two runs against examples worked out by hand, and the script."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from goracs.evaluate import compare as C


def test_paired_hr_difference_by_hand():
    a = [0, 3, None, 12]
    b = [1, 0, 5, None]
    r = C.paired_ranking_difference(a, b, 10, "HR")
    # gains A 1,1,0,0 and B 1,1,1,0: differences 0,0,1,0.
    assert r["a"] == pytest.approx(0.5) and r["b"] == pytest.approx(0.75)
    assert r["diff"] == pytest.approx(0.25)
    # sample sd of (0,0,1,0) is 0.5, over sqrt(4): 0.25; z = 1.
    assert r["se"] == pytest.approx(0.25) and r["z"] == pytest.approx(1.0)
    assert (r["wins"], r["losses"], r["ties"]) == (1, 0, 3)


def test_paired_ndcg_difference_by_hand():
    a = [0, 3, None, 12]
    b = [1, 0, 5, None]
    r = C.paired_ranking_difference(a, b, 10, "NDCG")
    d = [1 / math.log2(3) - 1, 1 - 1 / math.log2(5), 1 / math.log2(7), 0.0]
    assert r["diff"] == pytest.approx(sum(d) / 4)
    assert r["se"] == pytest.approx(np.std(d, ddof=1) / 2)
    assert (r["wins"], r["losses"], r["ties"]) == (2, 1, 1)
    # At k = 1 only rank 0 counts: A's first sample, B's second.
    r1 = C.paired_ranking_difference(a, b, 1, "NDCG")
    assert r1["diff"] == pytest.approx(0.0) and (r1["wins"], r1["losses"]) == (1, 1)


def test_identical_runs_differ_by_zero_with_undefined_z():
    r = C.paired_ranking_difference([0, 4, 30], [0, 4, 30], 5, "HR")
    assert r["diff"] == 0.0 and r["se"] == 0.0 and math.isnan(r["z"])
    assert r["ties"] == 3


def test_paired_ranking_rejects_bad_input():
    with pytest.raises(ValueError, match="as many samples"):
        C.paired_ranking_difference([0, 1], [0], 10, "HR")
    with pytest.raises(ValueError, match="metric"):
        C.paired_ranking_difference([0], [0], 10, "MRR")
    with pytest.raises(ValueError, match="k must"):
        C.paired_ranking_difference([0], [0], 0, "HR")


def test_paired_auc_of_reversed_scores_differs_by_one_in_every_resample():
    y = [0, 0, 1, 1, 0, 1]
    a = [0.9, 0.8, 0.2, 0.1, 0.7, 0.3]   # every negative above every positive: AUC 0
    b = [0.1, 0.2, 0.8, 0.9, 0.3, 0.7]   # AUC 1
    r = C.paired_auc_difference(y, a, b, n_boot=200, seed=3)
    assert (r["a"], r["b"], r["diff"]) == (0.0, 1.0, 1.0)
    assert r["se"] == 0.0 and r["low"] == 1.0 and r["high"] == 1.0
    assert 0 < r["resamples"] <= 200


def test_paired_auc_bootstrap_is_seeded():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    a, b = rng.random(60), rng.random(60)
    r1 = C.paired_auc_difference(y, a, b, n_boot=100, seed=7)
    r2 = C.paired_auc_difference(y, a, b, n_boot=100, seed=7)
    r3 = C.paired_auc_difference(y, a, b, n_boot=100, seed=8)
    assert r1 == r2 and r1["se"] != r3["se"]
    assert r1["low"] < r1["high"] and r1["resamples"] == 100
    with pytest.raises(ValueError, match="must match"):
        C.paired_auc_difference(y, a, b[:10])



def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _seqrec(ranks: list[int | None]) -> list[dict]:
    return [{"index": i, "target": f"T{i}", "generated": "x", "rank_sampled": r,
             "rank_full": None if r is None else r * 10} for i, r in enumerate(ranks)]


def test_script_compares_seqrec_runs(tmp_path, capsys, load_script):
    a = _write(tmp_path / "zs" / "predictions.jsonl", _seqrec([0, 3, None, 12]))
    # same samples, other line order: matched by index
    b = _write(tmp_path / "ft" / "predictions.jsonl", list(reversed(_seqrec([1, 0, 5, None]))))
    assert load_script("compare_predictions").main([str(a), str(b), "--k", "10"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "| sampled.HR@10 |" in x)
    assert line.split("|")[1:-1] == [" zs ", " ft ", " sampled.HR@10 ", " 0.5000 ", " 0.7500 ",
                                     " +0.2500 ", " 0.2500 ", " +1.00 ", " 1 / 0 "]
    # full ranks are 10x: only rank 0 stays in the top 10 (A's first, B's second sample)
    full = next(x for x in out.splitlines() if "| full.HR@10 |" in x)
    assert " +0.0000 " in full and " 1 / 1 " in full


def test_script_skips_a_protocol_neither_run_scored(tmp_path, capsys, load_script):
    # Likelihood-ranked runs have sampled ranks only.
    rows = [{**r, "rank_full": None} for r in _seqrec([0, 3, 40])]
    a = _write(tmp_path / "a" / "predictions.jsonl", rows)
    b = _write(tmp_path / "b" / "predictions.jsonl", [{**r, "rank_sampled": 0} for r in rows])
    assert load_script("compare_predictions").main([str(a), str(b), "--k", "10"]) == 0
    out = capsys.readouterr().out
    assert "| sampled.HR@10 |" in out and "full." not in out


def test_script_compares_ctr_runs(tmp_path, capsys, load_script):
    y = [0, 0, 1, 1]
    a = _write(tmp_path / "a" / "predictions.jsonl",
               [{"index": i, "label": v, "p_yes": p} for i, (v, p) in
                enumerate(zip(y, [0.9, 0.8, 0.2, 0.1], strict=True))])
    b = _write(tmp_path / "b" / "predictions.jsonl",
               [{"index": i, "label": v, "p_yes": p} for i, (v, p) in
                enumerate(zip(y, [0.1, 0.2, 0.8, 0.9], strict=True))])
    assert load_script("compare_predictions").main([str(a), str(b), "--n-boot", "50"]) == 0
    out = capsys.readouterr().out
    assert "| a | b | 4 | 0.0000 | 1.0000 | +1.0000 | 0.0000 | [+1.0000, +1.0000] |" in out


def test_script_rejects_unpaired_or_mixed_files(tmp_path, capsys, load_script):
    a = _write(tmp_path / "a" / "predictions.jsonl", _seqrec([0, 1, 2]))
    b = _write(tmp_path / "b" / "predictions.jsonl", _seqrec([0, 1]))
    c = _write(tmp_path / "c" / "predictions.jsonl", [{"index": 0, "label": 1, "p_yes": 0.5}])
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    # the same indices, but metrics.json say the negatives were others
    d = _write(tmp_path / "d" / "predictions.jsonl", _seqrec([0, 1, 2]))
    e = _write(tmp_path / "e" / "predictions.jsonl", _seqrec([0, 1, 2]))
    for p, neg in ((d, "n1"), (e, "n2")):
        (p.parent / "metrics.json").write_text(json.dumps({"data": {"negatives_digest": neg}}))
    mod = load_script("compare_predictions")
    for argv in ([str(a), str(b)], [str(a), str(c)], [str(a), str(bad)], [str(a)],
                 [str(d), str(e)]):
        assert mod.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("compare_predictions: error:") and "\n" not in err
    assert "different SeqRec negatives" in err
    assert mod.main([str(a), str(d)]) == 0  # a run without the record is not refused
