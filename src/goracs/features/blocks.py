"""The parameter block whose per-sample gradient the scores measure.

A block is the weight or bias of one linear layer, used once per forward pass and tied to no
other module; the default is the LoRA B matrix of ``v_proj`` in the last decoder layer
(docs/method.md section 2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from goracs.errors import GoracsError


@dataclass(frozen=True)
class Block:
    """A measured block: its full name, the parameter, the linear layer that owns it and
    which of the layer's parameters it is (``"weight"`` or ``"bias"``)."""

    name: str
    param: Any
    module: Any
    kind: str


def _default_block(names: list[str]) -> str:
    best: tuple[int, str] | None = None
    for name in names:
        m = re.search(r"\.(\d+)\.self_attn\.v_proj\.lora_B\.[^.]+\.weight$", name)
        if m and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), name)
    if best is None:
        raise GoracsError("the model has no LoRA on v_proj; name a block with --block")
    return best[1]


def find_block(model: Any, block: str | None) -> str:
    """The full parameter name for ``block``: a full name or a dotted suffix of exactly one,
    e.g. ``layers.29.self_attn.v_proj.lora_B.default.weight``; ``None`` for the LoRA B matrix
    of ``v_proj`` in the last decoder layer."""
    # Tied weights appear once under each name, so that either name finds them.
    names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    if block is None:
        return _default_block(names)
    hits = [n for n in names if n == block or n.endswith("." + block)]
    if len(hits) != 1:
        lora = [n for n in names if ".lora_B." in n][-2:]
        what = "matches no parameter" if not hits else f"matches {len(hits)} parameters"
        raise GoracsError(f"block {block!r} {what}; give a full name or a unique dotted "
                          f"suffix, e.g. {', '.join(lora) or names[-1]}")
    return hits[0]


def linear_block(model: Any, name: str, param: Any) -> Block:
    """The block ``name`` (parameter ``param``) of ``model``, checked to be the weight or bias
    of a linear layer that no other module shares."""
    import torch

    owner_name, _, kind = name.rpartition(".")
    module = model.get_submodule(owner_name)
    if not isinstance(module, torch.nn.Linear) or kind not in ("weight", "bias"):
        raise GoracsError(f"block {name} is not the weight or bias of a linear "
                          f"layer (it belongs to a {type(module).__name__})")
    shared = [n for n, m in model.named_modules(remove_duplicate=False)
              if any(q is param for q in m.parameters(recurse=False))]
    if len(shared) > 1:
        raise GoracsError(f"block {name} is tied to {len(shared)} modules; "
                          "choose an untied block")
    return Block(name, param, module, kind)


def activate(model: Any, param: Any) -> None:
    """Let only ``param`` keep a gradient, so that the backward pass stops at its layer."""
    for p in model.parameters():
        p.requires_grad_(p is param)
