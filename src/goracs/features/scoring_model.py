"""The scoring model: a causal LM with a LoRA adapter, loaded for :class:`GradNormScorer`.

The ``identity`` it returns describes the loaded model (path, file fingerprints, precision,
adapter or fresh LoRA settings) and enters every cache key and manifest of the scores.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from goracs.cache import path_fingerprint
from goracs.errors import GoracsError
from goracs.models import resolve_llm


@dataclass(frozen=True)
class LoraSettings:
    """The LoRA put on the model when no warm-start adapter is given (dropout is always 0)."""

    r: int = 8
    alpha: int = 16
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    seed: int = 0


def load_scoring_model(
    model: str | None = None,
    adapter: str | os.PathLike | None = None,
    *,
    lora: LoraSettings = LoraSettings(),
    dtype: str = "fp32",
    device: str = "cpu",
) -> tuple[Any, Any, dict[str, Any]]:
    """Load a causal LM with a LoRA adapter, ready for :class:`GradNormScorer`.

    Parameters
    ----------
    model : str, optional
        ``None`` or ``"smollm2-135m-instruct"`` for the packaged SmolLM2 (converted once and
        cached), a local folder, or a hub id.
    adapter : path, optional
        A peft LoRA adapter folder to warm-start from; ``lora`` is then ignored.
    lora : LoraSettings
        Rank, alpha, target modules and the seed of the random LoRA A initialisation (B starts
        at zero, as peft initialises it, so norms depend on A through the seed).
    dtype : {"fp32", "bf16"}
        Precision of the base model's weights and activations.
    device : str
        ``"cpu"``, ``"cuda[:N]"`` or ``"auto"`` (a GPU when there is one).

    Returns
    -------
    (peft_model, tokenizer, identity)
        ``identity`` describes the loaded model for cache keys and manifests.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from goracs.lm import add_lora, attach_adapter, check_adapter_dir, pick_device, torch_dtype

    dtype_ = torch_dtype(dtype)
    device = pick_device(device)
    if lora.r < 1 or lora.alpha <= 0 or not lora.targets:
        raise GoracsError(f"invalid LoRA settings: r={lora.r}, alpha={lora.alpha}, "
                          f"targets={list(lora.targets)}")
    path = resolve_llm(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype_).to(device)
    except Exception as exc:  # hub, file and config errors come in many types
        raise GoracsError(f"cannot load model {path}: {type(exc).__name__}: {exc}") from None
    identity: dict[str, Any] = {"model": path, "model_files": path_fingerprint(path),
                                "dtype": dtype}
    if adapter is not None:
        torch.manual_seed(lora.seed)  # the global generator's state does not depend on the route
        apath = check_adapter_dir(adapter)
        peft_model = attach_adapter(lm, apath, trainable=False)
        identity.update(adapter=str(apath), adapter_files=path_fingerprint(apath))
    else:
        peft_model = add_lora(lm, r=lora.r, alpha=lora.alpha, dropout=0.0, targets=lora.targets,
                              seed=lora.seed, name=path)
        identity.update(adapter=None, lora={**asdict(lora), "targets": list(lora.targets)})
    peft_model.eval()
    return peft_model, tokenizer, identity
