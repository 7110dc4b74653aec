"""scripts/ctr_history_baseline.py on a hand-made CTR folder."""

import json
from pathlib import Path

import pytest

from goracs.prompts import DOMAINS, ctr_record


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    # liked shares 1/4, 2/4, 3/4, 4/4; the two higher ones are positives: rule AUC 1.0
    recs = []
    for k, label in zip(range(1, 5), [False, False, True, True], strict=True):
        liked = [i < k for i in range(4)]
        recs.append(ctr_record(DOMAINS["movies"], [f"T{i} (2000)" for i in range(4)], liked,
                               "X (1999)", label, str(k), k))
    (tmp_path / "test.json").write_text(json.dumps(recs))
    return tmp_path


def test_rule_and_model_on_the_scored_samples(folder: Path, capsys, load_script):
    mod = load_script("ctr_history_baseline")
    assert mod.main([str(folder)]) == 0
    assert "| (whole test.json) | 4 | | 1.0000 | |" in capsys.readouterr().out
    # a model scoring samples 0, 1, 3 against the rule's order: AUC 0, correlation -1
    pred = folder / "predictions.jsonl"
    pred.write_text("".join(json.dumps({"index": i, "label": y, "p_yes": p}) + "\n"
                            for i, y, p in [(0, 0, 0.9), (1, 0, 0.5), (3, 1, 0.1)]))
    assert mod.main([str(folder), str(pred)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1:4] == ["3", "0.0000", "1.0000"] and cells[4] == "-0.98"  # r = -0.982


def test_predictions_of_another_folder_fail_in_one_line(folder: Path, capsys, load_script):
    pred = folder / "p.jsonl"
    pred.write_text(json.dumps({"index": 0, "label": 1, "p_yes": 0.5}) + "\n")
    assert load_script("ctr_history_baseline").main([str(folder), str(pred)]) == 2
    err = capsys.readouterr().err
    assert "labels differ" in err and err.count("\n") == 1
