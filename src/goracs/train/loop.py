"""The epochs of a fine-tuning run, in plain torch.

Each epoch shuffles the samples (seeded per epoch) and cuts them into optimizer batches; a
batch runs as micro-batches whose summed token losses are divided by the number of loss tokens
of the whole batch, so the step does not depend on how the batch is split. AdamW steps under
the warm-up/decay schedule (:mod:`goracs.train.schedule`); after each epoch the validation loss
is measured, the best epoch kept and a checkpoint written (:mod:`goracs.train.checkpoints`).
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from goracs.errors import GoracsError
from goracs.train import checkpoints
from goracs.train.checkpoints import Progress
from goracs.train.encoding import Encoded
from goracs.train.loss import summed_loss, validation_loss
from goracs.train.schedule import lr_factor, should_stop
from goracs.train.settings import TrainSettings


@dataclass(frozen=True)
class Training:
    """What the epochs run on: the model with its trainable parameters and their optimizer, the
    encoded training and validation samples (the latter may be empty), and where checkpoints
    go."""

    model: Any
    trainable: list[Any]
    optimizer: Any
    train: Encoded
    valid: Encoded
    pad_id: int
    settings: TrainSettings
    device: str
    ckdir: Path

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train) / self.settings.batch_size)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.settings.epochs


def run_epochs(job: Training, progress: Progress, *, desc: str, show: bool) -> float:
    """Train from the epoch after ``progress.epoch`` to the last one, or until early stopping,
    updating ``progress`` and writing a checkpoint after each epoch.

    Returns
    -------
    float
        Seconds of training, those of earlier calls included.
    """
    from tqdm import tqdm

    s = job.settings
    progress.stopped_early = bool(job.valid) and should_stop(progress.history,
                                                             progress.best_epoch,
                                                             s.early_stopping)
    bar = tqdm(total=job.total_steps, initial=progress.step, desc=desc, unit="step",
               file=sys.stderr, disable=not show, dynamic_ncols=True)
    job.model.train()
    t_run = time.perf_counter()
    for epoch in range(progress.epoch, s.epochs):
        if progress.stopped_early:
            break
        t_epoch = time.perf_counter()
        loss, tokens = _train_epoch(job, progress, epoch, bar)
        _end_epoch(job, progress, epoch, loss, tokens, t_epoch, bar)
        state = progress.state(progress.seconds_before + time.perf_counter() - t_run)
        checkpoints.save_checkpoint(job.ckdir, epoch + 1, job.model, job.optimizer, state,
                                    keep={progress.best_epoch})
    bar.close()
    return progress.seconds_before + time.perf_counter() - t_run


def _train_epoch(job: Training, progress: Progress, epoch: int, bar: Any) -> tuple[float, int]:
    """One pass over the shuffled samples; the summed loss and the number of loss tokens."""
    import torch

    s = job.settings
    n = len(job.train)
    perm = np.random.default_rng([s.seed, epoch]).permutation(n)
    ep_loss, ep_tokens = 0.0, 0
    for start in range(0, n, s.batch_size):
        rows = perm[start:start + s.batch_size]
        n_tokens = job.train.loss_tokens(rows)
        for g in job.optimizer.param_groups:
            g["lr"] = s.lr * lr_factor(progress.step, job.total_steps, s.warmup_steps)
        job.optimizer.zero_grad(set_to_none=True)
        if n_tokens:
            for loss in _backward(job, rows, n_tokens, epoch, progress.step, bar):
                ep_loss += loss
            if s.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(job.trainable, s.max_grad_norm)
            job.optimizer.step()
        ep_tokens += n_tokens
        progress.step += 1
        bar.update(1)
        bar.set_postfix(epoch=epoch + 1, loss=f"{ep_loss / max(1, ep_tokens):.4f}")
    return ep_loss, ep_tokens


def _backward(job: Training, rows: np.ndarray, n_tokens: int, epoch: int, step: int,
              bar: Any) -> list[float]:
    """Accumulate the gradients of one optimizer batch ``rows`` (``n_tokens`` loss tokens) in
    micro-batches; the summed loss of each micro-batch."""
    import torch

    losses = []
    for m in range(0, len(rows), job.settings.micro_batch_size):
        mb = job.train.micro_batch(rows[m:m + job.settings.micro_batch_size], job.pad_id,
                                   job.device)
        loss, _ = summed_loss(job.model, mb)
        if not torch.isfinite(loss.detach()):
            # A diverged run keeps nothing: its checkpoints are ours to remove, and no final
            # adapter is written.
            bar.close()
            shutil.rmtree(job.ckdir, ignore_errors=True)
            raise GoracsError(
                f"training diverged: the loss is {float(loss.detach())} at epoch "
                f"{epoch + 1}, step {step + 1}; no adapter kept (lower --lr or "
                "set --max-grad-norm)")
        (loss / n_tokens).backward()
        losses.append(float(loss.detach()))
    return losses


def _end_epoch(job: Training, progress: Progress, epoch: int, loss: float, tokens: int,
               t_epoch: float, bar: Any) -> None:
    """Record epoch ``epoch``: its losses (validation included), the best epoch so far and
    whether to stop early."""
    s = job.settings
    record: dict[str, Any] = {"epoch": epoch + 1,
                              "train_loss": loss / tokens if tokens else None,
                              "valid_loss": None}
    if job.valid:
        record["valid_loss"] = validation_loss(job.model, job.valid.ids, job.valid.labels,
                                               s.micro_batch_size, job.pad_id, job.device)
        job.model.train()
        if record["valid_loss"] < progress.best_valid:
            progress.best_valid, progress.best_epoch = record["valid_loss"], epoch + 1
        bar.set_postfix(epoch=epoch + 1, loss=f"{record['train_loss']:.4f}",
                        valid=f"{record['valid_loss']:.4f}")
    else:
        progress.best_epoch = epoch + 1
    record["seconds"] = round(time.perf_counter() - t_epoch, 3)
    progress.history.append(record)
    progress.epoch = epoch + 1
    if job.valid and should_stop(progress.history, progress.best_epoch, s.early_stopping):
        progress.stopped_early = True
