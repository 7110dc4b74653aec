"""The per-sample loss, and per-sample gradients rebuilt from one backward pass a batch.

For a sample with tokens x_0 ... x_{n-1} the loss is the mean token cross-entropy of the
whole rendered text, L = (1/(n-1)) sum_t CE(x_{t+1} | x_<=t), and the score is ||dL/dW||_2
for one parameter block W (method.md section 2; default: the LoRA B matrix of ``v_proj`` in
the last decoder layer). When W is the weight of a linear map y = W a, the gradient of a
sample is sum_t g_t a_t^T, with a_t the map's input and g_t = dL/dy_t at position t. The
losses of the samples of a batch are summed, never averaged across samples, so one backward
pass yields every g_t of every sample at once; a forward hook keeps a_t and the map's output,
and the per-sample gradients are rebuilt from the two. Only W requires a gradient, so the
backward pass stops at W's layer.

**Which tokens the loss covers** (``loss``): ``"text"``, every token after the first, as
above; or ``"response"``, the mean cross-entropy of the response tokens alone (the prompt
masked, as answer-only fine-tuning optimises it; docs/method.md section 2 takes CTR gradients
this way). With ``"response"`` only the response rows enter the head's backward pass; the
prompt positions still receive gradient through attention, and the shared prefix is cut short
of every sample's response, so no loss row falls inside it and its gradient is not added
(:mod:`goracs.features.prefix`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from goracs.errors import GoracsError
from goracs.features.blocks import Block


@contextmanager
def capture(block: Block) -> Iterator[dict[str, Any]]:
    """Keep the block's input (``"inp"``, detached) and output (``"out"``) of the forward pass
    run inside; a second call of the block's layer is refused."""
    seen: dict[str, Any] = {}

    def hook(module: Any, args: tuple[Any, ...], output: Any) -> None:
        if "out" in seen:
            raise GoracsError(f"block {block.name} is used more than once per forward "
                              "pass; choose another block")
        seen["inp"] = args[0].detach()
        seen["out"] = output

    handle = block.module.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def per_sample_grads(kind: str, inp: Any, gout: Any, mask: Any) -> Any:
    """Rebuild each sample's gradient of the block (float64, (B, ...)) from its inputs and
    output gradients; ``kind`` is ``"weight"`` or ``"bias"``."""
    import torch

    m = mask.to(torch.float32).unsqueeze(-1)
    g = gout.float() * m
    if kind == "bias":
        return g.sum(dim=1).double()
    a = inp.float() * m
    return torch.einsum("bto,bti->boi", g, a).double()


def loss_rows(loss: str, length: int, start: int, first: int | None) -> tuple[np.ndarray, float]:
    """The rows (positions t >= ``start``, each predicting token t + 1) whose losses a
    sample of ``length`` tokens sums, and the weight of each: all rows and 1/(length - 1)
    for the whole-text loss; the response rows (from ``first`` - 1) and 1/(length -
    first) for the response loss."""
    if loss == "response":
        assert first is not None and first - 1 >= start
        return np.arange(first - 1, length - 1), 1.0 / (length - first)
    return np.arange(start, length - 1), 1.0 / (length - 1)


def sample_losses(logits: Any, ids: Any, mask: Any,
                  response_starts: Sequence[int] | None = None) -> Any:
    """Each sample's mean next-token cross-entropy over its own tokens (padding excluded);
    with ``response_starts``, over its response tokens alone."""
    import torch

    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    valid = mask[:, 1:].to(nll.dtype)
    if response_starts is not None:
        # Position t predicts token t + 1: token s is predicted at t = s - 1.
        pos = torch.arange(nll.shape[1], device=nll.device)
        first = torch.as_tensor(np.asarray(response_starts, dtype=np.int64),
                                device=nll.device).unsqueeze(1)
        valid = valid * (pos.unsqueeze(0) >= first - 1).to(nll.dtype)
    return (nll * valid).sum(dim=1) / valid.sum(dim=1)
