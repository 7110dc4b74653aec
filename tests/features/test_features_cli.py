"""``goracs features DIR`` end to end, and its answers to bad input."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from features_helpers import write_prepared

from goracs.cli import main


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_features_of_a_seqrec_folder(tmp_path, capsys):
    d = write_prepared(tmp_path / "seq", "seqrec", n_train=5, n_valid=3)
    code, out, err = run(["features", str(d), "--quiet", "--batch-size", "4"], capsys)
    assert code == 0, err
    f = d / "features"
    train_emb = np.load(f / "train_emb.npy")
    valid_emb = np.load(f / "valid_emb.npy")
    norms = np.load(f / "grad_norms.npy")
    assert train_emb.shape == (5, 384) and valid_emb.shape == (3, 384)
    assert train_emb.dtype == valid_emb.dtype == norms.dtype == np.float32
    assert norms.shape == (5,) and np.all(norms > 0)
    el2n = np.load(f / "el2n.npy")
    influence = np.load(f / "influence.npy")
    assert el2n.dtype == influence.dtype == np.float32
    assert el2n.shape == influence.shape == (5,)
    # An error norm of a distribution against a one-hot target lies in [0, sqrt(2)].
    assert np.all((el2n > 0) & (el2n < np.sqrt(2)))
    assert np.all(np.isfinite(influence)) and len(set(influence.tolist())) == 5
    assert not (f / "train_labels.npy").exists()
    manifest = json.loads((f / "features.json").read_text())
    assert manifest["task"] == "seqrec" and manifest["n_train"] == 5
    assert manifest["grad_norms"]["block"].endswith("layers.29.self_attn.v_proj.lora_B."
                                                    "default.weight")
    assert manifest["grad_norms"]["lora"] == {"r": 8, "alpha": 16,
                                              "targets": ["q_proj", "v_proj"], "seed": 0}
    assert manifest["grad_norms"]["shared_prefix_tokens"] > 0
    assert manifest["files"]["el2n"] == "el2n.npy"
    assert manifest["files"]["influence"] == "influence.npy"
    assert manifest["el2n"]["stats"]["max"] == pytest.approx(float(el2n.max()))
    assert manifest["el2n"]["response_tokens"]["min"] >= 2  # a quoted title, then EOS
    assert manifest["influence"]["hessian"] == "identity"
    assert manifest["influence"]["gradient"] == manifest["grad_norms"]["block"]
    assert manifest["influence"]["stats"]["median"] == pytest.approx(
        float(np.median(influence)))
    assert set(manifest["seconds"]) == {"embed_train", "embed_valid", "load_model",
                                        "grad_norms", "total"}
    assert "5 train, 3 valid" in out

    # A second run finds the features of these records and settings there and does nothing;
    # one with another setting that leaves the arrays alone reads them back from the cache.
    before = {p.name: p.read_bytes() for p in f.glob("*.npy")}
    manifest_bytes = (f / "features.json").read_bytes()
    code, _, err = run(["features", str(d), "--quiet", "--batch-size", "4"], capsys)
    assert code == 0, err
    assert (f / "features.json").read_bytes() == manifest_bytes
    code, _, err = run(["features", str(d), "--quiet", "--batch-size", "4", "--threads", "1",
                        "--encoder-batch-size", "32"], capsys)
    assert code == 0, err
    assert {p.name: p.read_bytes() for p in f.glob("*.npy")} == before
    assert json.loads((f / "features.json").read_text())["seconds"]["grad_norms"] < \
        manifest["seconds"]["grad_norms"]

    # The importance baselines find their scores in the folder.
    for method in ("el2n", "dealrec"):
        code, _, err = run(["select", "--data", str(d), "--budget", "2", "--method", method,
                            "--out", str(tmp_path / method)], capsys)
        assert code == 0, err
        sel = json.loads((tmp_path / method / "selection.json").read_text())
        assert len(sel["indices"]) == 2
        assert sel["inputs"]["scores"] == {"el2n": str(f / "el2n.npy"),
                                           "influence": str(f / "influence.npy")}
    top = sorted(np.argsort(-el2n, kind="stable")[:2].tolist())
    assert json.loads((tmp_path / "el2n" / "selection.json").read_text())["indices"] == top


@pytest.mark.slow
def test_features_of_a_ctr_folder_include_labels(tmp_path, capsys):
    d = write_prepared(tmp_path / "ctr", "ctr", n_train=4, n_valid=3)
    f = d / "features"
    f.mkdir()
    # an earlier run's features, with scores
    np.save(f / "el2n.npy", np.ones(4, dtype=np.float32))
    earlier = json.dumps({"task": "ctr", "n_train": 4, "files": {"el2n": "el2n.npy"}})
    (f / "features.json").write_text(earlier)
    # A max-length that the prompt alone fills leaves EL2N nothing to measure.
    code, _, err = run(["features", str(d), "--quiet", "--max-length", "30"], capsys)
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("goracs: error: ") and "Traceback" not in err
    assert "train.json: record 0 keeps no response token within --max-length 30" in last
    assert (f / "features.json").read_text() == earlier  # a failed run changes nothing
    code, _, err = run(["features", str(d), "--quiet", "--batch-size", "4", "--lora-r", "4",
                        "--lora-targets", "v_proj", "--no-scores"], capsys)
    assert code == 0, err
    assert not (f / "el2n.npy").exists() and not (f / "influence.npy").exists()
    assert np.load(f / "train_labels.npy").tolist() == [0, 1, 1, 0]
    assert np.load(f / "valid_labels.npy").tolist() == [1, 1, 0]
    manifest = json.loads((f / "features.json").read_text())
    assert manifest["encoder"]["texts"] == "without response"
    assert manifest["labels"] == {"train": {"positive": 2, "negative": 2},
                                  "valid": {"positive": 2, "negative": 1}}
    assert manifest["grad_norms"]["lora"]["targets"] == ["v_proj"]
    assert "el2n" not in manifest["files"] and "influence" not in manifest


def corrupt(d, name, content):
    (d / name).write_text(content)


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "train.json").unlink(), "file not found: .*train.json"),
    (lambda d: corrupt(d, "valid.json", "[]"), "valid.json: no records"),
    (lambda d: corrupt(d, "train.json", json.dumps([{"instruction": "i", "output": "o"}])),
     "record 0 has no field 'input'"),
    (lambda d: corrupt(d, "meta.json", json.dumps({"task": "rank"})), "task must be one of"),
    (lambda d: (d / "meta.json").unlink(), "meta.json"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, damage, message):
    d = write_prepared(tmp_path / "d", "seqrec", n_train=3, n_valid=2)
    damage(d)
    code, _, err = run(["features", str(d), "--quiet"], capsys)
    assert code == 2
    assert err.startswith("goracs: error: ") and err.count("\n") == 1
    assert re.search(message, err)
    assert not (d / "features").exists()


def test_bad_labels_and_options_are_rejected(tmp_path, capsys):
    d = write_prepared(tmp_path / "d", "ctr", n_train=3, n_valid=2)
    with pytest.raises(SystemExit) as stop:  # refused by the argument parser
        main(["features", str(d), "--quiet", "--task", "ctr", "--batch-size", "0"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "--batch-size: must be a positive integer" in err
    recs = json.loads((d / "train.json").read_text())
    recs[2]["output"] = "yes please"
    (d / "train.json").write_text(json.dumps(recs))
    code, _, err = run(["features", str(d), "--quiet"], capsys)
    assert code == 2 and "record 2 output must be 'Yes' or 'No'" in err
    code, _, err = run(["features", str(tmp_path / "nowhere"), "--quiet"], capsys)
    assert code == 2 and "data folder not found" in err
    code, _, err = run(["features", str(d), "--quiet", "--device", "tpu"], capsys)
    assert code == 2 and "device must be auto, cpu or cuda" in err
    assert not (d / "features").exists()
