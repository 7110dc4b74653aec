"""End to end with the real packaged SmolLM2: fine-tune a few steps, interrupt and resume,
evaluate both tasks. Slow (about a minute on 2 cores)."""

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch")

from goracs.errors import GoracsError  # noqa: E402
from goracs.evaluate import metrics as M  # noqa: E402

INSTR = ("Given the user's preference and unpreference, identify whether the user will like "
         "the target movie by answering \"Yes\" or \"No\".")


def _ctr(pref, unpref, target, answer):
    inp = (f"User Preference: {', '.join(f'{chr(34)}{t}{chr(34)}' for t in pref)}\n"
           f"User Unpreference: {', '.join(f'{chr(34)}{t}{chr(34)}' for t in unpref)}\n"
           f"Whether the user will like the target movie \"{target}\"?")
    return {"instruction": INSTR, "input": inp, "output": answer, "user": "1", "target": target}


CTR_TRAIN = [
    _ctr(["Toy Story (1995)", "Heat (1995)"], ["Jumanji (1995)"], "Casino (1995)", "Yes"),
    _ctr(["Fargo (1996)"], ["Sabrina (1995)", "Nixon (1995)"], "Balto (1995)", "No"),
    _ctr(["Babe (1995)", "Se7en (1995)"], ["Othello (1995)"], "Clueless (1995)", "Yes"),
    _ctr(["Casino (1995)"], ["Heat (1995)", "Babe (1995)"], "Nixon (1995)", "No"),
]
CTR_VALID = [
    _ctr(["Heat (1995)"], ["Balto (1995)"], "Fargo (1996)", "Yes"),
    _ctr(["Nixon (1995)"], ["Toy Story (1995)"], "Jumanji (1995)", "No"),
]
TITLES = ["Babe (1995)", "Balto (1995)", "Casino (1995)", "Clueless (1995)", "Fargo (1996)",
          "Heat (1995)", "Jumanji (1995)", "Nixon (1995)", "Toy Story (1995)"]


def _seqrec(history, target, negatives):
    hist = ", ".join(f'"{t}"' for t in history)
    return {"instruction": "Given a list of movies the user has watched before, please "
            "recommend a new movie that the user likes to the user.",
            "input": f"The user has watched the following movies before: {hist}",
            "output": f'"{target}"', "user": "1", "target": target, "negatives": negatives}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    ctr = root / "ctr"
    ctr.mkdir()
    (ctr / "test.json").write_text(json.dumps(CTR_TRAIN + CTR_VALID))
    (ctr / "meta.json").write_text(json.dumps({"task": "ctr"}))
    seq = root / "seqrec"
    seq.mkdir()
    test = [_seqrec(["Toy Story (1995)", "Heat (1995)"], "Casino (1995)",
                    ["Balto (1995)", "Nixon (1995)"]),
            # The target is in no catalogue: the full protocol must count it as a miss.
            _seqrec(["Fargo (1996)"], "Unknown Film (2001)", ["Babe (1995)", "Heat (1995)"])]
    (seq / "test.json").write_text(json.dumps(test))
    (seq / "items.json").write_text(json.dumps(TITLES))
    (seq / "meta.json").write_text(json.dumps({"task": "seqrec"}))
    return {"ctr": ctr, "seqrec": seq, "root": root}


def _weights(folder):
    from safetensors.numpy import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_finetune_resume_evaluate(data, tmp_path, monkeypatch):
    from goracs.evaluate.run import EvalSettings, evaluate
    from goracs.train import TrainSettings
    from goracs.train import checkpoints as ck
    from goracs.train import manifest as mf
    from goracs.train import trainer as ft

    settings = TrainSettings(epochs=2, batch_size=2, micro_batch_size=1, cutoff_len=256)

    # Uninterrupted reference run.
    straight = tmp_path / "straight"
    m1 = ft.finetune(CTR_TRAIN, straight, settings, valid_records=CTR_VALID, progress=False)
    assert [h["epoch"] for h in m1["history"]] == [1, 2]
    assert m1["data"]["train_loss_tokens"] == 8  # the answer and end-of-sequence, 4 samples
    assert all(h["valid_loss"] > 0 for h in m1["history"])
    assert not (tmp_path / ".straight.checkpoints").exists()

    # Interrupted after the first epoch's checkpoint, then rerun with the same --out.
    real_save = ck.save_checkpoint

    def save_then_stop(ckdir, epoch, *args, **kwargs):
        real_save(ckdir, epoch, *args, **kwargs)
        if epoch == 1:
            raise KeyboardInterrupt

    out = tmp_path / "resumed"
    monkeypatch.setattr(ck, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        ft.finetune(CTR_TRAIN, out, settings, valid_records=CTR_VALID, progress=False)
    monkeypatch.setattr(ck, "save_checkpoint", real_save)
    assert not out.exists() and (tmp_path / ".resumed.checkpoints" / "epoch-0001").is_dir()
    with pytest.raises(GoracsError, match="different run"):
        ft.finetune(CTR_TRAIN[:3], out, settings, valid_records=CTR_VALID, progress=False)
    m2 = ft.finetune(CTR_TRAIN, out, settings, valid_records=CTR_VALID, progress=False)
    assert m2["resumed_from_epoch"] == 1
    assert m2["history"] == [{**h, "seconds": h2["seconds"]}
                             for h, h2 in zip(m1["history"], m2["history"], strict=True)]
    w1, w2 = _weights(straight), _weights(out)
    assert w1.keys() == w2.keys() and all(np.array_equal(w1[k], w2[k]) for k in w1)
    assert any(np.abs(w).max() > 0 for k, w in w1.items() if "lora_B" in k)
    # A rerun of a finished run changes nothing; a different run may not overwrite it.
    stamp = (out / "adapter_model.safetensors").stat().st_mtime_ns
    assert ft.finetune(CTR_TRAIN, out, settings, valid_records=CTR_VALID,
                       progress=False)["history"] == m2["history"]
    assert (out / "adapter_model.safetensors").stat().st_mtime_ns == stamp
    # A different run into the same --out replaces the earlier adapter whole once it ends.
    other = ft.finetune(CTR_TRAIN[:2], out, settings, progress=False)
    assert other["data"]["train_samples"] == 2
    assert json.loads((out / "training.json").read_text())["data"]["train_samples"] == 2
    assert sorted(p.name for p in out.iterdir()) == sorted([*mf.ADAPTER_FILES, mf.MANIFEST])
    assert not [p for p in tmp_path.iterdir() if ".goracs-" in p.name]

    # CTR evaluation with the adapter: outputs recompute to the reported metrics.
    ev = tmp_path / "ev-ctr"
    doc = evaluate(data["ctr"], "ctr", ev, EvalSettings(batch_size=4), adapter=out,
                   progress=False)
    lines = [json.loads(x) for x in (ev / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and all(0.0 < x["p_yes"] < 1.0 for x in lines)
    y = [x["label"] for x in lines]
    p = [x["p_yes"] for x in lines]
    assert doc["metrics"]["AUC"] == pytest.approx(M.auc(y, p))
    assert doc["metrics"]["log_loss"] == pytest.approx(M.log_loss(y, p))
    assert json.loads((ev / "metrics.json").read_text())["adapter"] == str(out)
    assert doc["answer_tokens"]["Yes_text"].strip() == "Yes"

    # SeqRec grounding with the base model; the title embeddings are cached and reused.
    cache = tmp_path / "title-cache"
    es = EvalSettings(batch_size=2, max_new_tokens=6)
    ev = tmp_path / "ev-seq"
    doc = evaluate(data["seqrec"], "seqrec", ev, es, progress=False, embedding_cache=cache)
    lines = [json.loads(x) for x in (ev / "predictions.jsonl").read_text().splitlines()]
    assert [x["target"] for x in lines] == ["Casino (1995)", "Unknown Film (2001)"]
    assert lines[1]["rank_full"] is None and doc["catalogue"]["targets_missing"] == 1
    grounded_catalogue = doc["catalogue"]
    assert all(0 <= x["rank_sampled"] <= 2 for x in lines)
    assert doc["metrics"]["sampled"] == M.ranking_metrics([x["rank_sampled"] for x in lines])
    assert doc["metrics"]["full"] == M.ranking_metrics([x["rank_full"] for x in lines])
    cached = sorted(cache.glob("*.npy"))
    assert len(cached) == 1 and np.load(cached[0]).shape == (len(TITLES), 576)
    stamp = cached[0].stat().st_mtime_ns
    again = evaluate(data["seqrec"], "seqrec", tmp_path / "ev-seq2", es, progress=False,
                     embedding_cache=cache)
    assert cached[0].stat().st_mtime_ns == stamp
    assert (ev / "predictions.jsonl").read_bytes() == \
        (tmp_path / "ev-seq2" / "predictions.jsonl").read_bytes()
    assert again["metrics"] == doc["metrics"]

    # Catalogue decoding: every answer spells one catalogue title exactly, which then grounds
    # to itself (rank 0 whenever it is the target).
    cat = EvalSettings(batch_size=2, max_new_tokens=16, decoding="catalogue")
    ev = tmp_path / "ev-cat"
    doc = evaluate(data["seqrec"], "seqrec", ev, cat, progress=False, embedding_cache=cache)
    lines = [json.loads(x) for x in (ev / "predictions.jsonl").read_text().splitlines()]
    assert all(x["generated"] in TITLES for x in lines)
    assert all(x["generated_raw"] == f'"{x["generated"]}"' for x in lines)
    assert doc["metrics"]["answer_in_catalogue"] == 1.0
    assert doc["settings"]["decoding"] == "catalogue"
    assert len(sorted(cache.glob("*.npy"))) == 1

    # Likelihood ranking: no generation, the sampled protocol only, ranks recompute.
    lik = EvalSettings(ranking="likelihood")
    ev = tmp_path / "ev-lik"
    doc = evaluate(data["seqrec"], "seqrec", ev, lik, progress=False, embedding_cache=cache)
    lines = [json.loads(x) for x in (ev / "predictions.jsonl").read_text().splitlines()]
    assert doc["metrics"]["full"] is None and "generate" not in doc["seconds"]
    assert all(x["rank_full"] is None and 0 <= x["rank_sampled"] <= 2 for x in lines)
    assert all(x["target_log_likelihood"] < 0 for x in lines)
    assert doc["catalogue"] == grounded_catalogue
    assert doc["metrics"]["sampled"] == M.ranking_metrics([x["rank_sampled"] for x in lines])


def test_a_diverging_run_stops_and_keeps_nothing(tmp_path):
    from goracs.train import TrainSettings, finetune

    out = tmp_path / "adapter"
    settings = TrainSettings(lr=1e9, epochs=3, batch_size=1, micro_batch_size=1)
    with pytest.raises(GoracsError, match=r"training diverged: the loss is nan at epoch 1"):
        finetune(CTR_TRAIN, out, settings, progress=False)
    assert list(tmp_path.iterdir()) == []  # no adapter, no checkpoints left behind
