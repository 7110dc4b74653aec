"""LoRA fine-tuning of a causal LM on Alpaca records, with per-epoch checkpoints.

The loop is plain torch: shuffle (seeded per epoch), micro-batches whose summed token losses
are divided by the number of loss tokens of the whole optimizer batch (so the step does not
depend on how the batch is split), AdamW, a linear warm-up/decay schedule. After every epoch
the adapter, the optimizer state, the step count and the random state are written to
``.OUT.checkpoints/epoch-NNNN`` beside ``OUT``; a rerun with the same ``OUT`` and the same
settings continues after the last complete epoch and ends with the same weights as an
uninterrupted run; checkpoints of a different run are refused, never overwritten. The final
adapter (the epoch with the lowest validation loss, or the last epoch without validation data)
is assembled beside ``OUT`` and swapped in whole (:mod:`goracs.outputs`): an earlier finished
run there is reused when it is this run (same settings, data, model and warm start) and
replaced otherwise; a folder holding anything else is refused before any work.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from goracs.cache import content_key, path_fingerprint, texts_digest
from goracs.errors import GoracsError
from goracs.io import atomic_write_json, read_json
from goracs.lm import (
    add_lora,
    check_adapter_dir,
    decoder_and_head,
    head_logits,
    load_lm,
    pick_device,
)
from goracs.outputs import OutputPlace
from goracs.records import render_prompt, response_start, tokenize_texts
from goracs.train.settings import TrainSettings

IGNORE = -100
MANIFEST = "training.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def encode_records(
    tokenizer: Any, records: Sequence[Mapping[str, Any]], cutoff_len: int, loss: str
) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids and loss labels of each record, rendered as the features stage renders it.

    The ids are those of :func:`goracs.records.tokenize_texts` on the whole rendering
    (cut to ``cutoff_len``, end-of-sequence appended when it fits). With ``loss="response"``
    the labels of the prompt tokens are ``-100`` (no loss): the prompt's length is that of its
    own tokenization, or of the common prefix when the tokenizer merges across the boundary.

    Returns
    -------
    (ids, labels) : two lists of equally long integer lists
    """
    full_texts = [render_prompt(r, True) for r in records]
    ids = tokenize_texts(tokenizer, full_texts, cutoff_len)
    if loss == "full":
        return ids, [list(x) for x in ids]
    prompts = tokenizer([render_prompt(r, False) for r in records],
                        add_special_tokens=True)["input_ids"]
    labels = []
    for seq, prompt in zip(ids, prompts, strict=True):
        n = response_start(seq, prompt)
        labels.append([IGNORE] * n + list(seq[n:]))
    return ids, labels


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based): linear
    warm-up over ``warmup_steps`` steps, then linear decay reaching zero after the last step."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    remaining = total_steps - step
    return max(0.0, remaining / max(1, total_steps - warmup_steps))


def should_stop(history: Sequence[Mapping[str, Any]], best_epoch: int | None,
                patience: int | None) -> bool:
    """Early stopping: ``patience`` epochs have passed since the best validation loss."""
    if patience is None or best_epoch is None or not history:
        return False
    return history[-1]["epoch"] - best_epoch >= patience


def _pad(seqs: Sequence[Sequence[int]], value: int) -> np.ndarray:
    width = max(len(s) for s in seqs)
    out = np.full((len(seqs), width), value, dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s
    return out


def _micro_batch(ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]], pad_id: int,
                 device: str) -> dict[str, Any]:
    import torch

    # Right padding: under a causal mask the real tokens never see the pads after them, so a
    # padded sample gives the same logits as the sample alone.
    input_ids = torch.from_numpy(_pad(ids, pad_id)).to(device)
    lab = torch.from_numpy(_pad(labels, IGNORE)).to(device)
    mask = torch.from_numpy(_pad([[1] * len(s) for s in ids], 0)).to(device)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": lab}


def _summed_loss(model: Any, batch: Mapping[str, Any]) -> tuple[Any, int]:
    """Sum of next-token cross-entropies over the label tokens of a micro-batch, and their
    number."""
    import torch.nn.functional as F

    decoder, head, cap = decoder_and_head(model)
    hidden = decoder(input_ids=batch["input_ids"],
                     attention_mask=batch["attention_mask"]).last_hidden_state
    target = batch["labels"][:, 1:]
    keep = target != IGNORE
    # Logits only where a label is: the same loss as the full head, without its cost.
    logits = head_logits(head, hidden[:, :-1][keep], cap).float()
    loss = F.cross_entropy(logits, target[keep], reduction="sum")
    return loss, int(keep.sum())


def _loss_tokens(labels: Sequence[int]) -> int:
    return sum(1 for t in labels[1:] if t != IGNORE)


def validation_loss(model: Any, ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]],
                    micro_batch_size: int, pad_id: int, device: str) -> float:
    """Token-mean cross-entropy of the model on encoded samples (no gradient)."""
    import torch

    order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for s in range(0, len(order), micro_batch_size):
            idx = order[s:s + micro_batch_size]
            batch = _micro_batch([ids[i] for i in idx], [labels[i] for i in idx], pad_id,
                                 device)
            loss, n = _summed_loss(model, batch)
            total += float(loss)
            count += n
    model.train(was_training)
    return total / count if count else float("nan")


def _run_key(settings: TrainSettings, identity: Mapping[str, Any], warm: str | None,
             train_digest: str, valid_digest: str | None, device: str) -> str:
    return content_key({"settings": settings.to_dict(), "model_files": identity["model_files"],
                        "warm_start": warm, "train": train_digest, "valid": valid_digest,
                        "device": device, "format": 1})


def _checkpoints(ckdir: Path) -> list[Path]:
    if not ckdir.is_dir():
        return []
    return sorted(p for p in ckdir.glob("epoch-*") if (p / "state.json").is_file())


def _save_checkpoint(ckdir: Path, epoch: int, model: Any, optimizer: Any,
                     state: Mapping[str, Any], keep: set[int]) -> None:
    import torch

    tmp = Path(tempfile.mkdtemp(prefix=f".epoch-{epoch:04d}.", suffix=".tmp", dir=ckdir))
    try:
        model.save_pretrained(str(tmp))
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save({"optimizer": optimizer.state_dict(), "rng": rng}, tmp / "trainer_state.pt")
        atomic_write_json(tmp / "state.json", state)
        final = ckdir / f"epoch-{epoch:04d}"
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Older epochs are dropped once the new one is safely in place, except the best so far.
    for p in _checkpoints(ckdir):
        e = int(p.name.split("-")[1])
        if e != epoch and e not in keep:
            shutil.rmtree(p, ignore_errors=True)


def _load_checkpoint(path: Path, model: Any, optimizer: Any, device: str) -> dict[str, Any]:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(path / "adapter_model.safetensors"), device=device)
    set_peft_model_state_dict(model, weights)
    # weights_only=True: tensors and plain containers only, nothing is unpickled as code.
    extra = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(extra["optimizer"])
    torch.set_rng_state(extra["rng"]["cpu"])
    if "cuda" in extra["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(extra["rng"]["cuda"])
    state = read_json(path / "state.json")
    if not isinstance(state, dict):
        raise GoracsError(f"{path / 'state.json'}: not a checkpoint state")
    return state


def _checkpoint_key(ckdir: Path) -> str | None:
    """The run key a checkpoint folder was written for (None when unreadable)."""
    try:
        doc = read_json(ckdir / "run.json")
    except GoracsError:
        return None
    return doc.get("run_key") if isinstance(doc, dict) else None


def _same_model(model_files: Any, model: str | None) -> bool:
    """Whether ``model_files`` (a manifest's fingerprint) is that of the model ``model``."""
    from goracs.models import resolve_llm

    return model_files == path_fingerprint(resolve_llm(model))


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "peft"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "missing"
    return out


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
    dev = pick_device(device)
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
    train_digest = texts_digest(train_texts)

    ckdir = out.parent / f".{out.name}.checkpoints"
    # An earlier finished run of goracs finetune there is reused when it is this run, and
    # otherwise replaced whole once this one finishes; anything else is refused before any
    # work (goracs.outputs).
    place = OutputPlace(out, "finetune", inputs=[warm_start]).check()
    if place.replaces:
        done = read_json(out / MANIFEST)
        if (done.get("settings") == settings.to_dict()
                and done.get("data", {}).get("train_digest") == train_digest
                and done.get("data", {}).get("valid_digest") == valid_digest
                and done.get("warm_start_files") == warm
                and _same_model(done.get("model_files"), model)):
            # a run killed after the swap leaves its checkpoints: they are done with (those
            # of any other run stay)
            if done.get("run_key") is not None and _checkpoint_key(ckdir) == done["run_key"]:
                shutil.rmtree(ckdir, ignore_errors=True)
            print(f"{out} already holds this finished run; nothing to do", file=sys.stderr)
            return done

    t_start = time.perf_counter()
    torch.manual_seed(settings.seed)
    if warm_start is not None:
        lm, tok, identity = load_lm(model, warm_start, dtype=settings.dtype, device=dev,
                                    trainable_adapter=True)
    else:
        # the fresh LoRA is drawn on the CPU, so every device starts from the same weights
        lm, tok, identity = load_lm(model, None, dtype=settings.dtype, device="cpu")
        lm = add_lora(lm, r=settings.lora_r, alpha=settings.lora_alpha,
                      dropout=settings.lora_dropout, targets=settings.target_modules,
                      seed=settings.seed, name=identity["model"])
        lm.to(dev)
    pad_id = int(tok.pad_token_id)
    ids, labels = encode_records(tok, train_records, settings.cutoff_len, settings.loss)
    v_ids, v_labels = (encode_records(tok, valid_used, settings.cutoff_len, settings.loss)
                       if valid_used else ([], []))
    no_answer = sum(1 for lab in labels if _loss_tokens(lab) == 0)
    if no_answer == len(labels):
        raise GoracsError(f"no training sample keeps an answer token within cutoff-len "
                          f"{settings.cutoff_len}; raise --cutoff-len")
    if no_answer:
        print(f"warning: {no_answer} of {len(labels)} samples lose their whole answer to "
              f"cutoff-len {settings.cutoff_len} and teach nothing", file=sys.stderr)

    trainable = [p for p in lm.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=settings.weight_decay)
    n = len(ids)
    steps_per_epoch = math.ceil(n / settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs

    run_key = _run_key(settings, identity, warm, train_digest, valid_digest, dev)
    history: list[dict[str, Any]] = []
    start_epoch, step = 0, 0
    best_epoch, best_valid = None, math.inf
    resumed_from = None
    seconds_before = 0.0
    if ckdir.is_dir() and _checkpoint_key(ckdir) != run_key:
        # The resumable state of an unfinished run is no earlier output: it is kept for that
        # run's own rerun, never replaced by another run's.
        raise GoracsError(f"{ckdir} holds checkpoints of a different run (other data, model "
                          "or settings); rerun that one to finish it, or remove the folder")
    if ckdir.is_dir():
        cks = _checkpoints(ckdir)
        if cks:
            state = _load_checkpoint(cks[-1], lm, optimizer, dev)
            start_epoch, step = state["epoch"], state["step"]
            history = state["history"]
            best_epoch = state["best_epoch"]
            best_valid = math.inf if state["best_valid"] is None else state["best_valid"]
            seconds_before = state["seconds"]
            resumed_from = start_epoch
            print(f"resuming {out} after epoch {start_epoch}", file=sys.stderr)
    else:
        ckdir.mkdir(parents=True)
        atomic_write_json(ckdir / "run.json", {"run_key": run_key, "out": str(out)})
    if resumed_from is None:
        torch.manual_seed(settings.seed)

    from tqdm import tqdm

    stopped_early = bool(v_ids) and should_stop(history, best_epoch, settings.early_stopping)
    bar = tqdm(total=total_steps, initial=step, desc=f"finetune {out.name}", unit="step",
               file=sys.stderr, disable=not progress, dynamic_ncols=True)
    lm.train()
    t_run = time.perf_counter()
    for epoch in range(start_epoch, settings.epochs):
        if stopped_early:
            break
        t_epoch = time.perf_counter()
        perm = np.random.default_rng([settings.seed, epoch]).permutation(n)
        ep_loss, ep_tokens = 0.0, 0
        for s in range(0, n, settings.batch_size):
            batch_idx = perm[s:s + settings.batch_size]
            n_tokens = sum(_loss_tokens(labels[i]) for i in batch_idx)
            for g in optimizer.param_groups:
                g["lr"] = settings.lr * lr_factor(step, total_steps, settings.warmup_steps)
            optimizer.zero_grad(set_to_none=True)
            if n_tokens:
                for m in range(0, len(batch_idx), settings.micro_batch_size):
                    idx = batch_idx[m:m + settings.micro_batch_size]
                    mb = _micro_batch([ids[i] for i in idx], [labels[i] for i in idx], pad_id,
                                      dev)
                    loss, _ = _summed_loss(lm, mb)
                    if not torch.isfinite(loss.detach()):
                        # A diverged run keeps nothing: its checkpoints are ours to remove,
                        # and no final adapter is written.
                        bar.close()
                        shutil.rmtree(ckdir, ignore_errors=True)
                        raise GoracsError(
                            f"training diverged: the loss is {float(loss.detach())} at epoch "
                            f"{epoch + 1}, step {step + 1}; no adapter kept (lower --lr or "
                            "set --max-grad-norm)")
                    (loss / n_tokens).backward()
                    ep_loss += float(loss.detach())
                if settings.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
                optimizer.step()
            ep_tokens += n_tokens
            step += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{ep_loss / max(1, ep_tokens):.4f}")
        record: dict[str, Any] = {"epoch": epoch + 1,
                                  "train_loss": ep_loss / ep_tokens if ep_tokens else None,
                                  "valid_loss": None}
        if v_ids:
            record["valid_loss"] = validation_loss(lm, v_ids, v_labels,
                                                   settings.micro_batch_size, pad_id, dev)
            lm.train()
            if record["valid_loss"] < best_valid:
                best_valid, best_epoch = record["valid_loss"], epoch + 1
            bar.set_postfix(epoch=epoch + 1, loss=f"{record['train_loss']:.4f}",
                            valid=f"{record['valid_loss']:.4f}")
        else:
            best_epoch = epoch + 1
        record["seconds"] = round(time.perf_counter() - t_epoch, 3)
        history.append(record)
        if v_ids and should_stop(history, best_epoch, settings.early_stopping):
            stopped_early = True
        state = {"epoch": epoch + 1, "step": step, "history": history,
                 "best_epoch": best_epoch,
                 "best_valid": None if best_valid == math.inf else best_valid,
                 "seconds": seconds_before + time.perf_counter() - t_run}
        _save_checkpoint(ckdir, epoch + 1, lm, optimizer, state, keep={best_epoch})
    bar.close()

    final_src = ckdir / f"epoch-{best_epoch:04d}"
    if not (final_src / "adapter_model.safetensors").is_file():
        raise GoracsError(f"checkpoint {final_src} is missing; remove {ckdir} and rerun")
    train_seconds = seconds_before + time.perf_counter() - t_run
    manifest = {
        "kind": "goracs finetune",
        "run_key": run_key,
        "settings": settings.to_dict(),
        "model": identity["model"],
        "model_files": identity["model_files"],
        "warm_start": None if warm_start is None else str(warm_start),
        "warm_start_files": warm,
        "lora": _lora_summary(lm),
        "device": dev,
        "data": {**(dict(sources) if sources else {}), "train_samples": n,
                 "train_digest": train_digest, "train_loss_tokens": sum(
                     _loss_tokens(lab) for lab in labels),
                 "samples_without_answer": no_answer,
                 "valid_samples": len(valid_used), "valid_digest": valid_digest},
        "steps": {"per_epoch": steps_per_epoch, "planned": total_steps, "done": step},
        "history": history,
        "best_epoch": best_epoch,
        "best_valid_loss": None if best_valid == math.inf else best_valid,
        "final_epoch": best_epoch,
        "stopped_early": stopped_early,
        "resumed_from_epoch": resumed_from,
        "seconds": {"train": round(train_seconds, 3),
                    "this_call": round(time.perf_counter() - t_start, 3)},
        "versions": _versions(),
    }
    # The adapter is assembled beside --out and swapped in whole (an earlier run's adapter
    # there goes with all its files); the checkpoints go once it is in place.
    tmp = place.begin()
    for name in ADAPTER_FILES:
        shutil.copyfile(final_src / name, tmp / name)
        # safetensors writes its files private; the adapter is meant to be shared.
        os.chmod(tmp / name, 0o644 & ~_umask())
    atomic_write_json(tmp / MANIFEST, manifest)
    os.chmod(tmp, 0o755 & ~_umask())
    place.commit()
    shutil.rmtree(ckdir, ignore_errors=True)
    return manifest


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _lora_summary(model: Any) -> dict[str, Any]:
    cfg = model.peft_config[model.active_adapter]
    return {"r": cfg.r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
            "target_modules": sorted(cfg.target_modules),
            "trainable_parameters": int(sum(p.numel() for p in model.parameters()
                                            if p.requires_grad))}
