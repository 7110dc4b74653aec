"""Fine-tuning settings and the CLI's handling of bad input: no model is loaded here."""

import json

import pytest

from goracs.cli import main
from goracs.errors import GoracsError
from goracs.train import PRESETS, TrainSettings, preset


def test_presets_hold_the_documented_settings():
    small = preset("cpu-small")
    assert (small.lr, small.loss, small.lora_r, small.lora_alpha) == (1e-3, "response", 8, 16)
    paper = preset("paper")
    assert (paper.lr, paper.batch_size, paper.micro_batch_size, paper.cutoff_len) == \
        (1e-4, 128, 4, 512)
    assert paper.target_modules == ("q_proj", "v_proj") and paper.lora_dropout == 0.05
    assert paper.loss == "full"
    for s in PRESETS.values():
        s.validate()
    with pytest.raises(GoracsError, match="unknown preset"):
        preset("huge")


@pytest.mark.parametrize("changes, message", [
    ({"batch_size": 6, "micro_batch_size": 4}, "multiple"),
    ({"lr": 0.0}, "lr must be a positive finite number"),
    ({"lr": float("inf")}, "lr must be a positive finite number"),
    ({"lr": float("nan")}, "lr must be a positive finite number"),
    ({"weight_decay": float("nan")}, "weight-decay must be finite"),
    ({"max_grad_norm": float("inf")}, "max-grad-norm must be a positive finite"),
    ({"loss": "prompt"}, "loss must be one of"),
    ({"lora_dropout": 1.0}, "lora-dropout"),
    ({"early_stopping": 0}, "early-stopping"),
    ({"target_modules": ()}, "target-modules"),
])
def test_bad_settings_are_refused(changes, message):
    with pytest.raises(GoracsError, match=message):
        TrainSettings(**changes).validate()


def test_updated_ignores_none_and_refuses_unknown_names():
    s = TrainSettings().updated(lr=None, epochs=3)
    assert s.epochs == 3 and s.lr == TrainSettings().lr
    with pytest.raises(GoracsError, match="unknown"):
        TrainSettings().updated(learning_rate=1.0)


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    bad = tmp_path / "coreset.json"
    bad.write_text(json.dumps([{"instruction": "x", "input": ""}]))
    code = main(["finetune", "--data", str(bad), "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("goracs: error:") and "output" in err
    assert "\n" not in err and not (tmp_path / "a").exists()
    code = main(["finetune", "--data", str(bad), "--out", str(tmp_path / "a"),
                 "--batch-size", "6", "--micro-batch-size", "4"])
    assert code == 2 and "multiple" in capsys.readouterr().err
    code = main(["evaluate", "--data", str(tmp_path), "--task", "ctr", "--out",
                 str(tmp_path / "e")])
    assert code == 2 and "test.json" in capsys.readouterr().err
