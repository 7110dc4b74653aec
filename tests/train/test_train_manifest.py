"""The run's key, the manifest training.json, the final adapter folder, and the reuse of a
finished run only when it is this run."""

from __future__ import annotations

import json
import os
from dataclasses import replace

from goracs.cache import path_fingerprint
from goracs.outputs import OutputPlace
from goracs.train import TrainSettings
from goracs.train.checkpoints import Progress, checkpoint_dir
from goracs.train.encoding import IGNORE, Encoded
from goracs.train.manifest import (
    ADAPTER_FILES,
    MANIFEST,
    RunSpec,
    build_manifest,
    finished_run,
    run_key,
    write_adapter,
)

SPEC = RunSpec(settings=TrainSettings(), device="cpu", model=None, warm_start=None,
               warm_files=None, train=[], valid=[], train_digest="d1", valid_digest=None)


def test_the_run_key_covers_settings_model_warm_start_data_and_device():
    # the keys of earlier runs: their checkpoints stay resumable
    assert run_key(SPEC, {"model_files": "files:abc"}) == "4cc227294b33b9e444217ba9"
    other = replace(SPEC, settings=TrainSettings(epochs=2, lr=1e-4), device="cuda",
                    warm_start="w", warm_files="files:w", valid_digest="d2")
    assert run_key(other, {"model_files": "files:abc"}) == "f5d450dfb61013a59afd7afa"
    # where the records came from and the model as named are no part of it
    assert run_key(replace(SPEC, sources={"train": "x"}, model="m"),
                   {"model_files": "files:abc", "model": "elsewhere"}) == \
        "4cc227294b33b9e444217ba9"
    for change in ({"device": "cuda"}, {"train_digest": "d3"}, {"valid_digest": "d2"},
                   {"warm_files": "files:w"}, {"settings": TrainSettings(seed=1)}):
        assert run_key(replace(SPEC, **change), {"model_files": "files:abc"}) != \
            "4cc227294b33b9e444217ba9"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_finished_run_is_reused_only_when_it_is_this_run(tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    spec = replace(SPEC, model=str(model))
    src = tmp_path / "epoch-0001"
    src.mkdir()
    (src / "adapter_config.json").write_text("{}")
    (src / "adapter_model.safetensors").write_bytes(b"weights")
    (src / "adapter_model.safetensors").chmod(0o600)
    manifest = {"kind": "goracs finetune", "run_key": "k", "settings": spec.settings.to_dict(),
                "model_files": path_fingerprint(model), "warm_start_files": None,
                "data": {"train_digest": "d1", "valid_digest": None}}
    out = tmp_path / "adapter"
    assert finished_run(OutputPlace(out, "finetune").check(), out, tmp_path, spec) is None
    write_adapter(OutputPlace(out, "finetune").check(), src, manifest)
    assert sorted(p.name for p in out.iterdir()) == sorted([*ADAPTER_FILES, MANIFEST])
    assert json.loads((out / MANIFEST).read_text()) == manifest
    assert (out / "adapter_model.safetensors").stat().st_mode & 0o777 == 0o644 & ~_umask()
    assert not [p for p in tmp_path.iterdir() if ".goracs-" in p.name]

    ckdir = checkpoint_dir(out)
    ckdir.mkdir()
    (ckdir / "run.json").write_text(json.dumps({"run_key": "k"}))
    place = OutputPlace(out, "finetune").check()
    for other in (replace(spec, settings=TrainSettings(epochs=3)),
                  replace(spec, train_digest="d2"), replace(spec, valid_digest="d2"),
                  replace(spec, warm_files="files:w"), replace(spec, model=str(tmp_path))):
        assert finished_run(place, out, ckdir, other) is None
    assert ckdir.is_dir()
    assert finished_run(place, out, ckdir, spec) == manifest
    assert not ckdir.exists()  # a run killed after the swap: its checkpoints are done with
    assert f"{out} already holds this finished run; nothing to do" in capsys.readouterr().err


def test_the_manifest_records_the_run(tiny_lora):
    from goracs.train.loop import Training

    enc = Encoded([[1, 2, 3], [1, 4]], [[IGNORE, 2, 3], [IGNORE, IGNORE]])
    settings = TrainSettings(batch_size=1, micro_batch_size=1, epochs=2)
    job = Training(model=tiny_lora, trainable=[], optimizer=None, train=enc,
                   valid=Encoded([], []), pad_id=0, settings=settings, device="cpu",
                   ckdir=None)
    progress = Progress(epoch=2, step=4, history=[{"epoch": 1}, {"epoch": 2}], best_epoch=2)
    spec = replace(SPEC, settings=settings, sources={"train": "coreset.json"},
                   valid=[{"x": 1}], valid_digest="d2")
    doc = build_manifest(spec, job, {"model": "m", "model_files": "files:m"}, "key", progress,
                         {"train": 1.23456, "this_call": 2.0})
    assert list(doc) == ["kind", "run_key", "settings", "model", "model_files", "warm_start",
                         "warm_start_files", "lora", "device", "engine", "processes", "data",
                         "steps", "history",
                         "best_epoch", "best_valid_loss", "final_epoch", "stopped_early",
                         "resumed_from_epoch", "seconds", "versions"]
    assert doc["data"] == {"train": "coreset.json", "train_samples": 2, "train_digest": "d1",
                           "train_loss_tokens": 2, "samples_without_answer": 1,
                           "valid_samples": 1, "valid_digest": "d2"}
    assert doc["steps"] == {"per_epoch": 2, "planned": 4, "done": 4}
    assert (doc["best_epoch"], doc["final_epoch"], doc["best_valid_loss"]) == (2, 2, None)
    assert doc["seconds"] == {"train": 1.235, "this_call": 2.0}
    assert doc["lora"]["r"] == 4 and doc["lora"]["target_modules"] == ["q_proj", "v_proj"]
    assert set(doc["versions"]) == {"torch", "transformers", "peft", "accelerate"}
    assert (doc["engine"], doc["processes"]) == ("loop", 1)
    assert "engine" not in doc["settings"]  # a loop run's settings, and key, as before
