"""LoRA fine-tuning of a causal LM on Alpaca records, with per-epoch checkpoints.

:func:`finetune` puts the parts together: the records are encoded
(:mod:`goracs.train.encoding`), trained on epoch by epoch (:mod:`goracs.train.loop`) with a
checkpoint after each, from which a killed run resumes (:mod:`goracs.train.checkpoints`), and
the final adapter (the epoch with the lowest validation loss, or the last epoch without
validation data) is written with its manifest (:mod:`goracs.train.manifest`). The adapter is
assembled beside ``OUT`` and swapped in whole (:mod:`goracs.outputs`): an earlier finished run
there is reused when it is this run (same settings, data, model and warm start) and replaced
otherwise; a folder holding anything else is refused before any work.

``settings.engine`` picks the epochs' loop: the plain torch loop of :mod:`goracs.train.loop`,
or transformers' ``Trainer`` (:mod:`goracs.train.hf`), which runs the same call under
``accelerate launch`` on several processes; there every process trains and only the main one
writes the checkpoint state and the adapter.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from goracs.cache import path_fingerprint, texts_digest
from goracs.errors import GoracsError
from goracs.lm import add_lora, check_adapter_dir, load_lm, pick_device
from goracs.outputs import OutputPlace
from goracs.records import render_prompt
from goracs.train.checkpoints import checkpoint_dir, epoch_dir, open_run, start_or_resume
from goracs.train.encoding import Encoded, encode_records
from goracs.train.loop import Training, run_epochs
from goracs.train.manifest import RunSpec, build_manifest, finished_run, run_key, write_adapter
from goracs.train.settings import TrainSettings


def finetune(
    train_records: Sequence[Mapping[str, Any]],
    out: str | os.PathLike,
    settings: TrainSettings,
    *,
    model: str | None = None,
    valid_records: Sequence[Mapping[str, Any]] | None = None,
    warm_start: str | os.PathLike | None = None,
    device: str = "auto",
    progress: bool = True,
    sources: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Fine-tune a LoRA adapter on ``train_records`` and save it as a peft folder at ``out``.

    Parameters
    ----------
    train_records, valid_records : sequences of Alpaca records
        The coreset, and optional validation records (their loss picks the best epoch and
        drives early stopping).
    out : path
        The adapter folder to create. Checkpoints live in ``.NAME.checkpoints`` beside it
        until the run finishes.
    settings : TrainSettings
    model : str, optional
        Base model (see :func:`goracs.lm.load_lm`); the packaged SmolLM2 by default.
    warm_start : path, optional
        A peft adapter to continue from; its own LoRA configuration then replaces the
        ``lora_*`` and ``target_modules`` settings.
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    progress : bool
        Show a progress bar on stderr.
    sources : mapping, optional
        Where the records came from, recorded in the manifest.

    Returns
    -------
    dict
        The training manifest, also written to ``out/training.json``.
    """
    import torch

    settings.validate()
    if not train_records:
        raise GoracsError("no training records")
    out = Path(out)
    spec = _run_spec(train_records, valid_records, settings, model, warm_start,
                     pick_device(device), sources)
    ckdir = checkpoint_dir(out)
    # An earlier finished run of goracs finetune there is reused when it is this run, and
    # otherwise replaced whole once this one finishes; anything else is refused before any
    # work (goracs.outputs).
    place = OutputPlace(out, "finetune", inputs=[warm_start]).check()
    done = finished_run(place, out, ckdir, spec)
    if done is not None:
        return done

    t_start = time.perf_counter()
    if settings.engine == "trainer":
        return _finetune_trainer(spec, out, ckdir, place, progress, t_start)
    job, identity = _prepare(spec, ckdir)
    key = run_key(spec, identity)
    state = start_or_resume(ckdir, key, out, job.model, job.optimizer, spec.device)
    if state.resumed_from is None:
        torch.manual_seed(settings.seed)
    train_seconds = run_epochs(job, state, desc=f"finetune {out.name}", show=progress)

    final_src = epoch_dir(ckdir, state.best_epoch)
    if not (final_src / "adapter_model.safetensors").is_file():
        raise GoracsError(f"checkpoint {final_src} is missing; remove {ckdir} and rerun")
    manifest = build_manifest(spec, job, identity, key, state,
                              {"train": train_seconds,
                               "this_call": time.perf_counter() - t_start})
    # the checkpoints go once the adapter is in place
    write_adapter(place, final_src, manifest)
    shutil.rmtree(ckdir, ignore_errors=True)
    return manifest


def _run_spec(train_records: Sequence[Mapping[str, Any]],
              valid_records: Sequence[Mapping[str, Any]] | None, settings: TrainSettings,
              model: str | None, warm_start: str | os.PathLike | None, device: str,
              sources: Mapping[str, Any] | None) -> RunSpec:
    """The run's :class:`RunSpec`: the warm start's fingerprint, the validation records scored
    (a seeded subset of ``max_valid`` when there are more) and the digests of the data."""
    warm = None
    if warm_start is not None:
        warm = path_fingerprint(check_adapter_dir(warm_start))
    train_texts = [render_prompt(r, True) for r in train_records]
    valid_sel: list[int] = []
    if valid_records:
        valid_sel = list(range(len(valid_records)))
        if settings.max_valid is not None and len(valid_sel) > settings.max_valid:
            rng = np.random.default_rng(settings.seed)
            valid_sel = sorted(rng.choice(len(valid_records), settings.max_valid,
                                          replace=False).tolist())
    valid_used = [valid_records[i] for i in valid_sel] if valid_records else []
    valid_digest = texts_digest([render_prompt(r, True) for r in valid_used]) \
        if valid_used else None
    return RunSpec(settings=settings, device=device, model=model, warm_start=warm_start,
                   warm_files=warm, train=train_records, valid=valid_used,
                   train_digest=texts_digest(train_texts), valid_digest=valid_digest,
                   sources=sources)


def _finetune_trainer(spec: RunSpec, out: Path, ckdir: Path, place: OutputPlace,
                      progress: bool, t_start: float) -> dict[str, Any]:
    """:func:`finetune` with ``Trainer`` (:mod:`goracs.train.hf`), in each process of the run;
    the main process alone creates the checkpoint folder and writes the adapter."""
    from goracs.train import hf

    args = hf.training_arguments(spec.settings, ckdir, spec.device)
    dist = hf.dist_state()
    main = dist.is_main_process
    # the model stays on the CPU until the Trainer places it on this process's device
    job, identity = _prepare(spec, ckdir, device="cpu", optimizer=False)
    key = run_key(spec, identity)
    if main:
        open_run(ckdir, key, out)
    dist.wait_for_everyone()
    if not main:
        open_run(ckdir, key, out, create=False)
    resume_from, state = hf.last_checkpoint(ckdir)
    if resume_from is not None and main:
        print(f"resuming {out} after epoch {state.epoch}", file=sys.stderr)
    dist.wait_for_everyone()  # every process has read the state before training moves on
    train_seconds = hf.run_trainer(job, args, state, resume_from, desc=f"finetune {out.name}",
                                   show=progress)
    final_src = epoch_dir(ckdir, state.best_epoch)
    if main and not (final_src / "adapter_model.safetensors").is_file():
        raise GoracsError(f"checkpoint {final_src} is missing; remove {ckdir} and rerun")
    manifest = build_manifest(spec, job, identity, key, state,
                              {"train": train_seconds,
                               "this_call": time.perf_counter() - t_start},
                              processes=dist.num_processes)
    if main:
        write_adapter(place, final_src, manifest)
        shutil.rmtree(ckdir, ignore_errors=True)
    dist.wait_for_everyone()
    return manifest


def _prepare(spec: RunSpec, ckdir: Path, device: str | None = None,
             optimizer: bool = True) -> tuple[Training, dict[str, Any]]:
    """Load the model with its adapter onto ``device`` (the run's by default), encode the
    records and set up the optimizer (none without ``optimizer``: ``Trainer`` makes its own);
    the model's identity (:func:`goracs.lm.load_lm`) comes along."""
    import torch

    s = spec.settings
    lm, tok, identity = _load_model(spec, device or spec.device)
    train = Encoded(*encode_records(tok, spec.train, s.cutoff_len, s.loss))
    valid = (Encoded(*encode_records(tok, spec.valid, s.cutoff_len, s.loss))
             if spec.valid else Encoded([], []))
    _check_answers(train, s.cutoff_len)
    trainable = [p for p in lm.parameters() if p.requires_grad]
    opt = (torch.optim.AdamW(trainable, lr=s.lr, weight_decay=s.weight_decay)
           if optimizer else None)
    job = Training(model=lm, trainable=trainable, optimizer=opt, train=train,
                   valid=valid, pad_id=int(tok.pad_token_id), settings=s, device=spec.device,
                   ckdir=ckdir)
    return job, identity


def _load_model(spec: RunSpec, device: str) -> tuple[Any, Any, dict[str, Any]]:
    """The base model with the warm-start adapter (trainable) or a fresh LoRA, on ``device``,
    its tokenizer and its identity."""
    import torch

    s = spec.settings
    torch.manual_seed(s.seed)
    if spec.warm_start is not None:
        return load_lm(spec.model, spec.warm_start, dtype=s.dtype, device=device,
                       trainable_adapter=True)
    # the fresh LoRA is drawn on the CPU, so every device starts from the same weights
    lm, tok, identity = load_lm(spec.model, None, dtype=s.dtype, device="cpu")
    lm = add_lora(lm, r=s.lora_r, alpha=s.lora_alpha, dropout=s.lora_dropout,
                  targets=s.target_modules, seed=s.seed, name=identity["model"])
    lm.to(device)
    return lm, tok, identity


def _check_answers(train: Encoded, cutoff_len: int) -> None:
    """Refuse a training set whose every answer falls beyond the cutoff; warn when some do."""
    no_answer = train.without_answer()
    if no_answer == len(train):
        raise GoracsError(f"no training sample keeps an answer token within cutoff-len "
                          f"{cutoff_len}; raise --cutoff-len")
    if no_answer:
        print(f"warning: {no_answer} of {len(train)} samples lose their whole answer to "
              f"cutoff-len {cutoff_len} and teach nothing", file=sys.stderr)
