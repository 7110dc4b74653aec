"""What identifies a fine-tuning run (its key), and what a finished run leaves: the manifest
``training.json`` beside the adapter files in ``OUT``.

A finished run in ``OUT`` is reused when it is this run (same settings, data, model and warm
start); the final adapter is assembled beside ``OUT`` and swapped in whole
(:mod:`goracs.outputs`).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from goracs.cache import content_key, path_fingerprint
from goracs.io import atomic_write_json, read_json
from goracs.outputs import OutputPlace
from goracs.train.checkpoints import Progress, checkpoint_key
from goracs.train.loop import Training
from goracs.train.settings import TrainSettings

MANIFEST = "training.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass(frozen=True)
class RunSpec:
    """What a fine-tuning run is asked to do: its settings, device, base model (as given) and
    warm start (with the fingerprint of its files), its training records and the validation
    records it scores (after ``max_valid``), the digests of both renderings, and where the
    records came from (``sources``, for the manifest)."""

    settings: TrainSettings
    device: str
    model: str | None
    warm_start: str | os.PathLike | None
    warm_files: str | None
    train: Sequence[Mapping[str, Any]]
    valid: list[Mapping[str, Any]]
    train_digest: str
    valid_digest: str | None
    sources: Mapping[str, Any] | None = None


def run_key(spec: RunSpec, identity: Mapping[str, Any]) -> str:
    """The key of the run: its settings, model files, warm start, data and device."""
    return content_key({"settings": spec.settings.to_dict(),
                        "model_files": identity["model_files"], "warm_start": spec.warm_files,
                        "train": spec.train_digest, "valid": spec.valid_digest,
                        "device": spec.device, "format": 1})


def _same_model(model_files: Any, model: str | None) -> bool:
    """Whether ``model_files`` (a manifest's fingerprint) is that of the model ``model``."""
    from goracs.models import resolve_llm

    return model_files == path_fingerprint(resolve_llm(model))


def finished_run(place: OutputPlace, out: Path, ckdir: Path,
                 spec: RunSpec) -> dict[str, Any] | None:
    """The manifest of the finished run ``out`` holds when it is this run, else None."""
    if not place.replaces:
        return None
    done = read_json(out / MANIFEST)
    if not (done.get("settings") == spec.settings.to_dict()
            and done.get("data", {}).get("train_digest") == spec.train_digest
            and done.get("data", {}).get("valid_digest") == spec.valid_digest
            and done.get("warm_start_files") == spec.warm_files
            and _same_model(done.get("model_files"), spec.model)):
        return None
    # a run killed after the swap leaves its checkpoints: they are done with (those of any
    # other run stay)
    if done.get("run_key") is not None and checkpoint_key(ckdir) == done["run_key"]:
        shutil.rmtree(ckdir, ignore_errors=True)
    print(f"{out} already holds this finished run; nothing to do", file=sys.stderr)
    return done


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "peft", "accelerate"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "missing"
    return out


def _lora_summary(model: Any) -> dict[str, Any]:
    cfg = model.peft_config[model.active_adapter]
    return {"r": cfg.r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
            "target_modules": sorted(cfg.target_modules),
            "trainable_parameters": int(sum(p.numel() for p in model.parameters()
                                            if p.requires_grad))}


def build_manifest(spec: RunSpec, job: Training, identity: Mapping[str, Any], key: str,
                   progress: Progress, seconds: Mapping[str, float],
                   processes: int = 1) -> dict[str, Any]:
    """The content of ``training.json``; ``seconds`` holds ``train`` and ``this_call``,
    ``processes`` the number of processes that trained (``accelerate launch``)."""
    return {
        "kind": "goracs finetune",
        "run_key": key,
        "settings": spec.settings.to_dict(),
        "model": identity["model"],
        "model_files": identity["model_files"],
        "warm_start": None if spec.warm_start is None else str(spec.warm_start),
        "warm_start_files": spec.warm_files,
        "lora": _lora_summary(job.model),
        "device": spec.device,
        "engine": spec.settings.engine,
        "processes": processes,
        "data": {**(dict(spec.sources) if spec.sources else {}),
                 "train_samples": len(job.train), "train_digest": spec.train_digest,
                 "train_loss_tokens": job.train.loss_tokens(),
                 "samples_without_answer": job.train.without_answer(),
                 "valid_samples": len(spec.valid), "valid_digest": spec.valid_digest},
        "steps": {"per_epoch": job.steps_per_epoch, "planned": job.total_steps,
                  "done": progress.step},
        "history": progress.history,
        "best_epoch": progress.best_epoch,
        "best_valid_loss": progress.best_valid_or_none(),
        "final_epoch": progress.best_epoch,
        "stopped_early": progress.stopped_early,
        "resumed_from_epoch": progress.resumed_from,
        "seconds": {name: round(value, 3) for name, value in seconds.items()},
        "versions": _versions(),
    }


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_adapter(place: OutputPlace, src: Path, manifest: Mapping[str, Any]) -> None:
    """Assemble the adapter files of checkpoint ``src`` and ``manifest`` beside ``OUT`` and
    swap them in whole (an earlier run's adapter there goes with all its files)."""
    tmp = place.begin()
    for name in ADAPTER_FILES:
        shutil.copyfile(src / name, tmp / name)
        # safetensors writes its files private; the adapter is meant to be shared.
        os.chmod(tmp / name, 0o644 & ~_umask())
    atomic_write_json(tmp / MANIFEST, manifest)
    os.chmod(tmp, 0o755 & ~_umask())
    place.commit()
