"""The epochs of a fine-tuning run on transformers' ``Trainer`` (``engine="trainer"``).

The ``Trainer`` brings what the plain loop (:mod:`goracs.train.loop`) lacks: several
processes under ``accelerate launch`` (DDP, DeepSpeed, FSDP), mixed precision and gradient
checkpointing. What goracs adds on top is carried by a subclass and one callback, so that a
run trains like the loop does:

- the samples of an epoch come in the loop's seeded order (:class:`EpochSampler`, one
  permutation per epoch, reached through the sampler's ``set_epoch``);
- the loss of a micro-batch is the summed cross-entropy of its label tokens divided by the
  label tokens of the whole optimizer batch, counted over every process
  (:meth:`GoracsTrainer.compute_loss`, :meth:`GoracsTrainer._get_num_items_in_batch`), so a
  step does not depend on how the batch is split across micro-batches and processes;
- the learning rate follows :func:`goracs.train.schedule.lr_factor` (the linear schedule of
  ``Trainer`` warms up from zero instead of from ``1 / warmup_steps``);
- after each epoch :class:`EpochRecorder` scores the validation samples, keeps the best epoch,
  applies the early-stopping rule of :func:`goracs.train.schedule.should_stop`, stops a
  diverged run, and turns the ``Trainer``'s checkpoint into the loop's ``epoch-NNNN`` layout
  with its ``state.json`` (:mod:`goracs.train.checkpoints`), which a rerun resumes from.

Only the main process writes checkpoint files of its own; the ``Trainer`` writes its own
(optimizer, random state per process) into the same folder. This module imports torch and
transformers at once: :mod:`goracs.train.trainer` imports it only for that engine.
"""

from __future__ import annotations

import inspect
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from goracs.errors import GoracsError
from goracs.io import atomic_write_json, read_json
from goracs.train.checkpoints import STATE, Progress, epoch_dir, list_checkpoints
from goracs.train.encoding import IGNORE, Encoded, micro_batch
from goracs.train.loop import Training
from goracs.train.schedule import lr_factor, should_stop
from goracs.train.settings import TrainSettings

#: the folder the ``Trainer`` writes a checkpoint to, before it is renamed ``epoch-NNNN``
HF_PREFIX = "checkpoint-"


def world_size() -> int:
    """The number of processes of this run: ``WORLD_SIZE`` as ``accelerate launch`` and
    ``torchrun`` set it, else one."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def dist_state() -> Any:
    """accelerate's ``PartialState`` (rank, number of processes, barriers), as the
    ``TrainingArguments`` made it: call :func:`training_arguments` first, which sets the
    processes up for the run's device."""
    from accelerate import PartialState

    return PartialState()


class EpochSampler:
    """The sample order of each epoch: ``numpy.random.default_rng([seed, epoch])``'s
    permutation, as the plain loop shuffles. The ``Trainer`` (or accelerate's data loader)
    calls :meth:`set_epoch` before each epoch, a resumed run included."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Any:
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist())

    def __len__(self) -> int:
        return self.n


class _Samples:
    """The encoded samples as a map-style dataset of ``(ids, labels)`` pairs."""

    def __init__(self, enc: Encoded) -> None:
        self.enc = enc

    def __len__(self) -> int:
        return len(self.enc)

    def __getitem__(self, i: int) -> tuple[list[int], list[int]]:
        return self.enc.ids[i], self.enc.labels[i]


class _Collate:
    """Pads a list of samples into one micro-batch (:func:`goracs.train.encoding.micro_batch`)
    on the CPU; the ``Trainer`` moves it to its device."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, samples: list[tuple[list[int], list[int]]]) -> dict[str, Any]:
        return micro_batch([s[0] for s in samples], [s[1] for s in samples], self.pad_id, "cpu")


def label_tokens(batch: dict[str, Any]) -> Any:
    """The number of loss tokens of a micro-batch (a tensor): labels after the first position
    that are not :data:`goracs.train.encoding.IGNORE`."""
    return (batch["labels"][:, 1:] != IGNORE).sum()


def keeps_logits(model: Any) -> bool:
    """Whether the forward of ``model`` (a peft model or a plain causal LM) takes
    ``logits_to_keep`` (most causal LMs of transformers do), so the head runs only where a
    label is."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def forward_summed_loss(model: Any, batch: dict[str, Any], keep_logits: bool) -> tuple[Any, int]:
    """Sum of next-token cross-entropies over the label tokens of a micro-batch, and their
    number.

    The same quantity as :func:`goracs.train.loss.summed_loss`, but through the model's own
    forward (a DDP, DeepSpeed or FSDP wrapper syncs gradients and gathers parameters only
    there). With ``keep_logits`` the head runs only at the positions where some sample of the
    batch has a label (``logits_to_keep``).
    """
    target = batch["labels"][:, 1:]
    keep = target != IGNORE
    kwargs: dict[str, Any] = {}
    if keep_logits:
        cols = keep.any(0).nonzero().flatten()
        if cols.numel() == 0:  # no label here: one position keeps the graph (loss 0)
            cols = torch.tensor([target.shape[1] - 1], device=target.device)
        kwargs["logits_to_keep"] = cols
    else:
        cols = None
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                use_cache=False, **kwargs)
    logits = out.logits
    if cols is None:
        logits = logits[:, :-1]
    else:
        target = target[:, cols]
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1),
                           ignore_index=IGNORE, reduction="sum")
    return loss, int(keep.sum())


class GoracsTrainer(Trainer):
    """``Trainer`` with goracs's sample order, loss normalisation and schedule.

    Beyond ``Trainer``: the loss is the summed token loss divided by the optimizer batch's
    label tokens over all processes (``Trainer``'s own count may include a position the loss
    never sees, and its model loss runs the full-vocabulary head at every position); the
    sampler replays the plain loop's seeded permutations; the schedule is
    :func:`goracs.train.schedule.lr_factor`. ``recorder`` is the run's
    :class:`EpochRecorder`, also passed among ``callbacks``.
    """

    def __init__(self, *args: Any, recorder: EpochRecorder, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorder = recorder
        recorder.trainer = self
        self.loss_is_scaled_for_ga = True
        self.keep_logits = keeps_logits(self.model)

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        ds = self.train_dataset if train_dataset is None else train_dataset
        return EpochSampler(len(ds), self.args.seed)

    def _get_num_items_in_batch(self, batch_samples: list, device: Any) -> Any:
        n = sum(int(label_tokens(b)) for b in batch_samples)
        count = torch.tensor([float(n)], device=device)
        if self.accelerator.num_processes > 1:
            count = self.accelerator.reduce(count, "sum")
        return count[0]

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        loss, n = forward_summed_loss(model, inputs, self.keep_logits)
        self.recorder.add_loss(loss.detach(), n)
        if num_items_in_batch is None:
            num_items_in_batch = max(1, n)
        elif torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.clamp(min=1)
        # DDP and DeepSpeed average the gradients of the processes: undone here, so that a step
        # follows the summed loss of the whole batch over its label tokens
        scaled = loss / num_items_in_batch * self.accelerator.num_processes
        return (scaled, None) if return_outputs else scaled

    def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
        if self.lr_scheduler is None:
            job = self.recorder.job
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer if optimizer is not None else self.optimizer,
                _Schedule(job.total_steps, job.settings.warmup_steps))
            self._created_lr_scheduler = True
        return self.lr_scheduler


@dataclass(frozen=True)
class _Schedule:
    """:func:`goracs.train.schedule.lr_factor` as a picklable ``LambdaLR`` function."""

    total: int
    warmup: int

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.total, self.warmup)


class EpochRecorder(TrainerCallback):
    """The ``Trainer`` callback that keeps a run's :class:`Progress` as the plain loop does.

    It sums each epoch's token losses (over all processes), scores the validation samples after
    each epoch, keeps the best epoch, stops early (:func:`should_stop`) and on divergence, and
    turns each ``checkpoint-STEP`` the ``Trainer`` saves into ``epoch-NNNN`` with ``state.json``
    (keeping only the newest and the best). A callback rather than ``Trainer``'s own
    ``load_best_model_at_end`` and ``EarlyStoppingCallback``: those score with ``Trainer``'s
    evaluation loss (a mean over batches, not over tokens) and keep checkpoints by step, where a
    goracs run resumes and is reused by epoch.
    """

    def __init__(self, job: Training, progress: Progress, *, desc: str, show: bool) -> None:
        self.job, self.progress = job, progress
        self.desc, self.show = desc, show
        self.trainer: Any = None
        self.bar: Any = None
        self.ep_loss, self.ep_tokens = 0.0, 0
        self.t_run = self.t_epoch = time.perf_counter()
        self.diverged: tuple[float, int, int] | None = None

    def add_loss(self, loss: Any, tokens: int) -> None:
        """Count a micro-batch's summed loss; a non-finite one ends the run (at once with one
        process, after the optimizer step with several, so that all stop together)."""
        if not torch.isfinite(loss):
            if self.diverged is None:
                self.diverged = (float(loss), self.progress.epoch + 1, self.progress.step + 1)
            if self.trainer.accelerator.num_processes == 1:
                self._diverge()
            return
        self.ep_loss += float(loss)
        self.ep_tokens += tokens

    def _diverge(self) -> None:
        """End a diverged run: its checkpoints go (the main process removes them) and no
        adapter is written."""
        value, epoch, step = self.diverged or (float("nan"), self.progress.epoch + 1,
                                               self.progress.step + 1)
        if self.bar is not None:
            self.bar.close()
        if self.trainer.accelerator.is_main_process:
            shutil.rmtree(self.job.ckdir, ignore_errors=True)
        raise GoracsError(f"training diverged: the loss is {value} at epoch {epoch}, step "
                          f"{step}; no adapter kept (lower --lr or set --max-grad-norm)")

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from tqdm import tqdm

        self.t_run = time.perf_counter()
        main = self.trainer.accelerator.is_main_process
        self.bar = tqdm(total=self.job.total_steps, initial=self.progress.step, desc=self.desc,
                        unit="step", file=sys.stderr, disable=not (self.show and main),
                        dynamic_ncols=True)

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.ep_loss, self.ep_tokens = 0.0, 0
        self.t_epoch = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        acc = self.trainer.accelerator
        if acc.num_processes > 1:
            flag = torch.tensor([0.0 if self.diverged is None else 1.0], device=acc.device)
            if float(acc.reduce(flag, "sum")[0]) > 0:
                self._diverge()
        self.progress.step = state.global_step
        self.bar.update(1)
        self.bar.set_postfix(epoch=self.progress.epoch + 1,
                             loss=f"{self.ep_loss / max(1, self.ep_tokens):.4f}")

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        acc = self.trainer.accelerator
        loss, tokens = self.ep_loss, self.ep_tokens
        if acc.num_processes > 1:
            both = acc.reduce(torch.tensor([loss, float(tokens)], dtype=torch.float64,
                                           device=acc.device), "sum")
            loss, tokens = float(both[0]), int(both[1])
        p, s = self.progress, self.job.settings
        epoch = p.epoch
        record: dict[str, Any] = {"epoch": epoch + 1,
                                  "train_loss": loss / tokens if tokens else None,
                                  "valid_loss": None}
        if self.job.valid:
            record["valid_loss"] = self.validation_loss()
            if record["valid_loss"] < p.best_valid:
                p.best_valid, p.best_epoch = record["valid_loss"], epoch + 1
            self.bar.set_postfix(epoch=epoch + 1, loss=f"{record['train_loss']:.4f}",
                                 valid=f"{record['valid_loss']:.4f}")
        else:
            p.best_epoch = epoch + 1
        record["seconds"] = round(time.perf_counter() - self.t_epoch, 3)
        p.history.append(record)
        p.epoch = epoch + 1
        p.step = state.global_step
        if self.job.valid and should_stop(p.history, p.best_epoch, s.early_stopping):
            p.stopped_early = True
            control.should_training_stop = True
        # every epoch ends with a checkpoint, the last and an early stop's included
        control.should_save = True

    def validation_loss(self) -> float:
        """Token-mean cross-entropy on the validation samples, in the order of
        :func:`goracs.train.loss.validation_loss`; every process scores them all (the same
        forward passes on each, as DeepSpeed and FSDP need)."""
        model = self.trainer.model_wrapped
        dev = self.trainer.args.device
        v, mbs = self.job.valid, self.job.settings.micro_batch_size
        order = sorted(range(len(v)), key=lambda i: (len(v.ids[i]), i))
        total, count = 0.0, 0
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for start in range(0, len(order), mbs):
                idx = order[start:start + mbs]
                batch = micro_batch([v.ids[i] for i in idx], [v.labels[i] for i in idx],
                                    self.job.pad_id, dev)
                loss, n = forward_summed_loss(model, batch, self.trainer.keep_logits)
                total += float(loss)
                count += n
        model.train(was_training)
        return total / count if count else float("nan")

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        acc = self.trainer.accelerator
        acc.wait_for_everyone()  # every process has written its part of the checkpoint
        if acc.is_main_process:
            ckdir, p = self.job.ckdir, self.progress
            src = ckdir / f"{HF_PREFIX}{state.global_step}"
            final = epoch_dir(ckdir, p.epoch)
            if final.exists():
                shutil.rmtree(final)
            os.rename(src, final)
            seconds = p.seconds_before + time.perf_counter() - self.t_run
            atomic_write_json(final / STATE, {**p.state(seconds), "engine": "trainer"})
            for ck in list_checkpoints(ckdir):
                e = int(ck.name.split("-")[1])
                if e not in (p.epoch, p.best_epoch):
                    shutil.rmtree(ck, ignore_errors=True)
        acc.wait_for_everyone()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()


def last_checkpoint(ckdir: Path) -> tuple[Path | None, Progress]:
    """The newest complete checkpoint of a trainer run in ``ckdir`` and the progress it
    records (a fresh :class:`Progress` when there is none)."""
    cks = list_checkpoints(ckdir)
    if not cks:
        return None, Progress()
    state = read_json(cks[-1] / STATE)
    if not isinstance(state, dict) or state.get("engine") != "trainer":
        raise GoracsError(f"{cks[-1]}: not a checkpoint of the trainer engine; remove "
                          f"{ckdir} and rerun")
    return cks[-1], Progress.resumed(state)


def training_arguments(settings: TrainSettings, ckdir: Path, device: str) -> Any:
    """The ``TrainingArguments`` of a run: one optimizer batch is ``batch_size`` samples over
    all processes, as ``micro_batch_size`` samples per forward pass and gradient accumulation;
    AdamW (torch) with the settings' rate, weight decay and clipping; a checkpoint per epoch
    into the run's checkpoint folder ``ckdir``; nothing logged or reported. Creating them
    sets up the processes (accelerate's state) for ``device`` (``cpu`` or ``cuda``)."""
    s = settings
    processes = world_size()
    per_step = s.micro_batch_size * processes
    if s.batch_size % per_step:
        raise GoracsError(f"batch-size ({s.batch_size}) must be a multiple of "
                          f"micro-batch-size x processes ({s.micro_batch_size} x {processes})")
    args = TrainingArguments(
        output_dir=str(ckdir), per_device_train_batch_size=s.micro_batch_size,
        gradient_accumulation_steps=s.batch_size // per_step, num_train_epochs=s.epochs,
        learning_rate=s.lr, weight_decay=s.weight_decay,
        max_grad_norm=0.0 if s.max_grad_norm is None else s.max_grad_norm,
        warmup_steps=s.warmup_steps, optim="adamw_torch", seed=s.seed, data_seed=s.seed,
        eval_strategy="no", save_strategy="epoch", logging_strategy="no", report_to="none",
        disable_tqdm=True, remove_unused_columns=False, dataloader_drop_last=False,
        dataloader_pin_memory=False, use_cpu=device == "cpu", bf16=s.dtype == "bf16",
        activation_checkpointing=s.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        ddp_find_unused_parameters=False)
    if processes == 1 and args.n_gpu > 1:
        # one process drives one device: DataParallel would bypass the loss's own forward
        args._n_gpu = 1
    return args


def run_trainer(job: Training, args: Any, progress: Progress, resume_from: Path | None, *,
                desc: str, show: bool) -> float:
    """Train with ``Trainer`` from the epoch after ``progress.epoch`` (restoring the
    checkpoint ``resume_from``: weights, optimizer, schedule, random state) to the last one, or
    until early stopping, updating ``progress``; ``args`` are :func:`training_arguments`.
    The counterpart of
    :func:`goracs.train.loop.run_epochs`.

    Returns
    -------
    float
        Seconds of training, those of earlier calls included.
    """
    s = job.settings
    progress.stopped_early = bool(job.valid) and should_stop(progress.history,
                                                             progress.best_epoch,
                                                             s.early_stopping)
    if progress.stopped_early or progress.epoch >= s.epochs:
        return progress.seconds_before
    recorder = EpochRecorder(job, progress, desc=desc, show=show)
    trainer = GoracsTrainer(model=job.model, args=args, train_dataset=_Samples(job.train),
                            data_collator=_Collate(job.pad_id), callbacks=[recorder],
                            recorder=recorder)
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    t_run = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=None if resume_from is None else str(resume_from))
    finally:
        if recorder.bar is not None:
            recorder.bar.close()
    return progress.seconds_before + time.perf_counter() - t_run
