"""Per-epoch checkpoints of a fine-tuning run, and resuming from them.

After every epoch the adapter, the optimizer state, the random state and the run's progress
(:class:`Progress`) are written to ``.OUT.checkpoints/epoch-NNNN`` beside ``OUT``; the folder's
``run.json`` holds the key of the run it belongs to. A rerun with the same key continues after
the last complete epoch and ends with the same weights as an uninterrupted run; the
checkpoints of a different run are refused, never overwritten.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from goracs.errors import GoracsError
from goracs.io import atomic_write_json, read_json

RUN = "run.json"
STATE = "state.json"
TRAINER_STATE = "trainer_state.pt"


def checkpoint_dir(out: Path) -> Path:
    """Where the checkpoints of a run writing ``out`` live: ``.NAME.checkpoints`` beside it."""
    return out.parent / f".{out.name}.checkpoints"


def epoch_dir(ckdir: Path, epoch: int) -> Path:
    """The checkpoint written after epoch ``epoch`` (1-based)."""
    return ckdir / f"epoch-{epoch:04d}"


def list_checkpoints(ckdir: Path) -> list[Path]:
    """The complete checkpoints in ``ckdir`` (those with their state), oldest first."""
    if not ckdir.is_dir():
        return []
    return sorted(p for p in ckdir.glob("epoch-*") if (p / STATE).is_file())


def save_checkpoint(ckdir: Path, epoch: int, model: Any, optimizer: Any,
                    state: Mapping[str, Any], keep: set[int]) -> None:
    """Write the checkpoint of epoch ``epoch`` whole (assembled beside it, then renamed), then
    drop the older ones except the epochs in ``keep``."""
    import torch

    tmp = Path(tempfile.mkdtemp(prefix=f".epoch-{epoch:04d}.", suffix=".tmp", dir=ckdir))
    try:
        model.save_pretrained(str(tmp))
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save({"optimizer": optimizer.state_dict(), "rng": rng}, tmp / TRAINER_STATE)
        atomic_write_json(tmp / STATE, state)
        final = epoch_dir(ckdir, epoch)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Older epochs are dropped once the new one is safely in place, except the best so far.
    for p in list_checkpoints(ckdir):
        e = int(p.name.split("-")[1])
        if e != epoch and e not in keep:
            shutil.rmtree(p, ignore_errors=True)


def load_checkpoint(path: Path, model: Any, optimizer: Any, device: str) -> dict[str, Any]:
    """Restore the adapter weights, the optimizer and the random state of the checkpoint
    ``path``; return its state (:meth:`Progress.state`)."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(path / "adapter_model.safetensors"), device=device)
    set_peft_model_state_dict(model, weights)
    # weights_only=True: tensors and plain containers only, nothing is unpickled as code.
    extra = torch.load(path / TRAINER_STATE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(extra["optimizer"])
    torch.set_rng_state(extra["rng"]["cpu"])
    if "cuda" in extra["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(extra["rng"]["cuda"])
    state = read_json(path / STATE)
    if not isinstance(state, dict):
        raise GoracsError(f"{path / STATE}: not a checkpoint state")
    return state


def checkpoint_key(ckdir: Path) -> str | None:
    """The run key a checkpoint folder was written for (None when unreadable)."""
    try:
        doc = read_json(ckdir / RUN)
    except GoracsError:
        return None
    return doc.get("run_key") if isinstance(doc, dict) else None


@dataclass
class Progress:
    """Where a run stands after its last finished epoch; all but ``resumed_from`` and
    ``stopped_early`` is what a checkpoint's ``state.json`` holds.

    ``best_valid`` is infinite before any validation loss; ``seconds_before`` is the training
    time of the calls before this one.
    """

    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_valid: float = math.inf
    seconds_before: float = 0.0
    resumed_from: int | None = None
    stopped_early: bool = False

    @classmethod
    def resumed(cls, state: Mapping[str, Any]) -> Progress:
        """The progress a checkpoint's state records, resumed after its epoch."""
        return cls(epoch=state["epoch"], step=state["step"], history=state["history"],
                   best_epoch=state["best_epoch"],
                   best_valid=math.inf if state["best_valid"] is None else state["best_valid"],
                   seconds_before=state["seconds"], resumed_from=state["epoch"])

    def best_valid_or_none(self) -> float | None:
        return None if self.best_valid == math.inf else self.best_valid

    def state(self, seconds: float) -> dict[str, Any]:
        """The checkpoint state, with ``seconds`` of training so far."""
        return {"epoch": self.epoch, "step": self.step, "history": self.history,
                "best_epoch": self.best_epoch, "best_valid": self.best_valid_or_none(),
                "seconds": seconds}


def start_or_resume(ckdir: Path, run_key: str, out: Path, model: Any, optimizer: Any,
                    device: str) -> Progress:
    """The progress of the run keyed ``run_key``: restored from its last checkpoint in
    ``ckdir`` (model and optimizer included), or a fresh start with ``ckdir`` created for it.
    A folder of another run's checkpoints is refused."""
    if not open_run(ckdir, run_key, out):
        return Progress()
    cks = list_checkpoints(ckdir)
    if not cks:
        return Progress()
    progress = Progress.resumed(load_checkpoint(cks[-1], model, optimizer, device))
    print(f"resuming {out} after epoch {progress.epoch}", file=sys.stderr)
    return progress


def open_run(ckdir: Path, run_key: str, out: Path, create: bool = True) -> bool:
    """Whether ``ckdir`` already holds checkpoints of the run keyed ``run_key``; when it does
    not exist, it is created for that run (``create``). A folder of another run's checkpoints
    is refused."""
    if ckdir.is_dir() and checkpoint_key(ckdir) != run_key:
        # The resumable state of an unfinished run is no earlier output: it is kept for that
        # run's own rerun, never replaced by another run's.
        raise GoracsError(f"{ckdir} holds checkpoints of a different run (other data, model, "
                          "settings or engine); rerun that one to finish it, or remove the "
                          "folder")
    if ckdir.is_dir():
        return True
    if create:
        ckdir.mkdir(parents=True)
        atomic_write_json(ckdir / RUN, {"run_key": run_key, "out": str(out)})
    return False
