"""Loading a causal LM and its tokenizer, with a saved peft LoRA adapter or a fresh one, and the
device and dtype choice: one way for every stage (gradient norms, fine-tuning, scoring), so each
sees the same model the same way. Also the split of a causal LM into its decoder stack and
output head, which the fast scoring and gradient routes call apart."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from goracs.cache import path_fingerprint
from goracs.errors import GoracsError
from goracs.models import resolve_llm

DTYPES = ("fp32", "bf16")


def pick_device(device: str = "auto") -> str:
    """``"cuda"`` when asked for or when ``auto`` finds a GPU, else ``"cpu"``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise GoracsError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GoracsError("--device cuda was asked for but no GPU is available")
    return device


def torch_dtype(dtype: str) -> Any:
    import torch

    if dtype not in DTYPES:
        raise GoracsError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return torch.float32 if dtype == "fp32" else torch.bfloat16


def check_adapter_dir(adapter: str | os.PathLike) -> Path:
    p = Path(adapter)
    if not (p / "adapter_config.json").is_file():
        raise GoracsError(f"{p} is not a peft adapter folder (no adapter_config.json)")
    return p


def attach_adapter(lm: Any, adapter: str | os.PathLike, trainable: bool = False) -> Any:
    """``lm`` wrapped with the saved peft adapter in folder ``adapter``."""
    from peft import PeftModel

    apath = check_adapter_dir(adapter)
    try:
        with warnings.catch_warnings():
            # peft calls a transformers helper that transformers 5 marks as deprecated
            warnings.simplefilter("ignore", FutureWarning)
            return PeftModel.from_pretrained(lm, str(apath), is_trainable=trainable)
    except Exception as exc:
        raise GoracsError(f"cannot load adapter {apath}: {type(exc).__name__}: "
                          f"{exc}") from None


def add_lora(lm: Any, *, r: int, alpha: float, dropout: float, targets: tuple[str, ...] | list[str],
             seed: int, name: str = "the model") -> Any:
    """``lm`` wrapped with a fresh LoRA adapter (no bias), trainable.

    The A matrices are drawn from torch's global generator, seeded with ``seed`` right before;
    B starts at zero, as peft initialises it. ``name`` names the model in the error raised
    when a target module does not exist.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=list(targets), bias="none", task_type="CAUSAL_LM")
    torch.manual_seed(seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # as in attach_adapter
            return get_peft_model(lm, config)
    except ValueError as exc:
        raise GoracsError(f"cannot add LoRA to {name}: {exc}") from None


def load_tokenizer(path: str) -> Any:
    """The model's tokenizer with a padding token (the end-of-sequence one when it has none)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # hub, file and format errors come in many types
        raise GoracsError(f"cannot load the tokenizer of {path}: {type(exc).__name__}: "
                          f"{exc}") from None
    if tok.pad_token_id is None:
        if tok.eos_token_id is None:
            raise GoracsError(f"the tokenizer of {path} has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    return tok


def load_lm(
    model: str | None = None,
    adapter: str | os.PathLike | None = None,
    *,
    dtype: str = "fp32",
    device: str = "cpu",
    trainable_adapter: bool = False,
) -> tuple[Any, Any, dict[str, Any]]:
    """Load a causal LM, its tokenizer and, if given, a peft adapter on top.

    Parameters
    ----------
    model : str, optional
        ``None`` or ``"smollm2-135m-instruct"`` for the packaged SmolLM2, a local folder, or a
        hub id (see :func:`goracs.models.resolve_llm`).
    adapter : path, optional
        A peft adapter folder (``adapter_config.json`` + weights).
    dtype : {"fp32", "bf16"}
    device : str
        Where the model goes.
    trainable_adapter : bool
        Load the adapter with its weights trainable (warm start).

    Returns
    -------
    (model, tokenizer, identity)
        ``identity`` names the model and adapter and fingerprints their files, for cache keys
        and manifests.
    """
    from transformers import AutoModelForCausalLM

    path = resolve_llm(model)
    tok = load_tokenizer(path)
    try:
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype))
    except GoracsError:
        raise
    except Exception as exc:
        raise GoracsError(f"cannot load model {path}: {type(exc).__name__}: {exc}") from None
    identity: dict[str, Any] = {"model": path, "model_files": path_fingerprint(path),
                                "dtype": dtype, "adapter": None, "adapter_files": None}
    if adapter is not None:
        lm = attach_adapter(lm, adapter, trainable=trainable_adapter)
        apath = Path(adapter)
        identity.update(adapter=str(apath), adapter_files=path_fingerprint(apath))
    lm.to(device)
    return lm, tok, identity


def decoder_and_head(lm: Any) -> tuple[Any, Any, float | None]:
    """The decoder stack, the output head and the logit soft-cap of a causal LM (peft-wrapped
    or not).

    Calling the two apart lets the head run only at the positions that need logits: over a
    49k-token vocabulary the head is a fifth of a forward pass, and an answer-only loss or a
    P(Yes) needs one or two positions a sample.
    """
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    try:
        decoder = base.get_decoder()
        head = base.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        raise GoracsError(f"{type(base).__name__} exposes no decoder and output head") from None
    if decoder is None or head is None:
        raise GoracsError(f"{type(base).__name__} exposes no decoder and output head")
    cap = getattr(base.config, "final_logit_softcapping", None)
    return decoder, head, cap


def head_logits(head: Any, hidden: Any, cap: float | None) -> Any:
    """Logits of the output head on selected hidden states, soft-capped as the model does."""
    import torch

    logits = head(hidden)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits
