"""Fine-tuning settings and the two presets (``cpu-small`` and ``paper``)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from goracs.errors import GoracsError

LOSSES = ("response", "full")
#: the training loops: the plain torch loop of :mod:`goracs.train.loop`, or transformers'
#: ``Trainer`` (:mod:`goracs.train.hf`), which also runs under ``accelerate launch``
ENGINES = ("loop", "trainer")
#: settings left out of :meth:`TrainSettings.to_dict` while they hold these values, so that
#: the keys of runs made before the settings existed stay as they were
_UNKEYED_DEFAULTS = {"engine": "loop", "gradient_checkpointing": False}


@dataclass(frozen=True)
class TrainSettings:
    """Everything that shapes a fine-tuning run, and so its cache and checkpoint keys.

    ``batch_size`` is the number of samples per optimizer step; ``micro_batch_size`` the
    number per forward pass (gradients accumulate over ``batch_size / micro_batch_size``
    passes). ``loss="response"`` puts the loss on the answer tokens only (the tokens after
    ``### Response:``, end-of-sequence included); ``"full"`` on every token, as the reference
    does. ``max_valid`` caps the validation samples scored after each epoch (a seeded subset;
    ``None`` keeps all). ``early_stopping`` is the patience in epochs (``None``: never stop
    early). The learning rate rises linearly over ``warmup_steps`` steps, then falls linearly
    to zero at the last step (the transformers Trainer default schedule).

    ``engine`` picks the training loop (:data:`ENGINES`); the library default stays the plain
    loop, whose run keys predate the choice. ``gradient_checkpointing`` recomputes the
    decoder's activations in the backward pass (trainer engine only). Neither appears in
    :meth:`to_dict` at those defaults.
    """

    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    lr: float = 1e-3
    epochs: int = 10
    batch_size: int = 8
    micro_batch_size: int = 8
    cutoff_len: int = 512
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float | None = None
    loss: str = "response"
    seed: int = 0
    early_stopping: int | None = None
    max_valid: int | None = 64
    dtype: str = "fp32"
    engine: str = "loop"
    gradient_checkpointing: bool = False

    def validate(self) -> TrainSettings:
        """Return ``self`` after checking every value; raise :class:`GoracsError` otherwise."""
        if self.lora_r < 1 or self.lora_alpha <= 0:
            raise GoracsError(f"LoRA rank and alpha must be positive, got r={self.lora_r}, "
                              f"alpha={self.lora_alpha}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise GoracsError(f"lora-dropout must lie in [0, 1), got {self.lora_dropout}")
        if not self.target_modules or any(not m for m in self.target_modules):
            raise GoracsError("target-modules must name at least one module")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise GoracsError(f"lr must be a positive finite number, got {self.lr}")
        for name in ("epochs", "batch_size", "micro_batch_size"):
            if getattr(self, name) < 1:
                raise GoracsError(f"{name.replace('_', '-')} must be at least 1, got "
                                  f"{getattr(self, name)}")
        if self.batch_size % self.micro_batch_size:
            raise GoracsError(f"batch-size ({self.batch_size}) must be a multiple of "
                              f"micro-batch-size ({self.micro_batch_size})")
        if self.cutoff_len < 2:
            raise GoracsError(f"cutoff-len must be at least 2, got {self.cutoff_len}")
        if self.warmup_steps < 0 or not (math.isfinite(self.weight_decay)
                                         and self.weight_decay >= 0):
            raise GoracsError("warmup-steps and weight-decay must be finite and not negative, "
                              f"got {self.warmup_steps} and {self.weight_decay}")
        if self.max_grad_norm is not None and not (math.isfinite(self.max_grad_norm)
                                                   and self.max_grad_norm > 0):
            raise GoracsError(f"max-grad-norm must be a positive finite number, got "
                              f"{self.max_grad_norm}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise GoracsError(f"seed must be an integer >= 0, got {self.seed}")
        if self.loss not in LOSSES:
            raise GoracsError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.early_stopping is not None and self.early_stopping < 1:
            raise GoracsError(f"early-stopping must be at least 1, got {self.early_stopping}")
        if self.max_valid is not None and self.max_valid < 1:
            raise GoracsError(f"max-valid must be at least 1, got {self.max_valid}")
        if self.dtype not in ("fp32", "bf16"):
            raise GoracsError(f"dtype must be fp32 or bf16, got {self.dtype!r}")
        if self.engine not in ENGINES:
            raise GoracsError(f"engine must be one of {', '.join(ENGINES)}, got "
                              f"{self.engine!r}")
        if self.gradient_checkpointing and self.engine != "trainer":
            raise GoracsError("gradient-checkpointing needs the trainer engine")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON values: what run keys and manifests record. ``engine``
        and ``gradient_checkpointing`` are left out at their defaults, so a plain-loop run
        keeps the key it had before either existed."""
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        for name, value in _UNKEYED_DEFAULTS.items():
            if d[name] == value:
                del d[name]
        return d

    def updated(self, **changes: Any) -> TrainSettings:
        """A copy with the non-``None`` entries of ``changes`` applied."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise GoracsError(f"unknown training settings: {', '.join(sorted(unknown))}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


PRESETS: dict[str, TrainSettings] = {
    # For 2 CPU cores with SmolLM2: answer-only loss at lr 1e-3 is what lets a
    # 135M model learn from 64 CTR samples; about 90 s an epoch.
    "cpu-small": TrainSettings(),
    # The reference's LoRA settings (method.md section 6) for a GPU machine: whole-text loss,
    # lr 1e-4, effective batch 128 in micro-batches of 4, 512-token cutoff, 20 warm-up steps,
    # the best epoch by validation loss with patience 10 over at most 50 epochs.
    "paper": TrainSettings(lr=1e-4, epochs=50, batch_size=128, micro_batch_size=4,
                           cutoff_len=512, warmup_steps=20, loss="full", early_stopping=10,
                           max_valid=None),
}


def preset(name: str) -> TrainSettings:
    if name not in PRESETS:
        raise GoracsError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
    return PRESETS[name]
