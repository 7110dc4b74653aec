"""EL2N of a causal LM's response tokens, from the rows the gradient pass forms anyway.

**EL2N** (Paul et al., NeurIPS 2021) adapted to a causal LM: the mean, over the sample's
response tokens (everything after ``### Response:``, end-of-sequence included, as far as
``max_length`` keeps them), of ||softmax(z_t) - onehot(y_t)||_2, with z_t the logits that
predict response token y_t under the scoring model. The direct route reads it off the
exp(z - max) rows it forms anyway for the gradient (:mod:`goracs.features.head`); the plain
route from the model's logits (:mod:`goracs.features.plain_route`).
"""

from __future__ import annotations

from typing import Any


def error_norms(e: Any, targets: Any) -> Any:
    """||softmax(z) - onehot(y)||_2 of each row, from e = exp(z - max z) (float64 result).

    Written as sqrt(sum_{k != y} p_k^2 + (1 - p_y)^2) with 1 - p_y = sum_{k != y} e_k / sum e:
    every term is non-negative, so a confident right answer (p_y near 1) loses no digits to
    the cancellation that sum p^2 - 2 p_y + 1 suffers.
    """
    import torch

    e = e.double()  # a copy: the caller's buffer stays intact
    rows = torch.arange(e.shape[0], device=e.device)
    e_y = e[rows, targets].clone()
    e[rows, targets] = 0
    rest = e.sum(dim=1)
    return torch.sqrt((e * e).sum(dim=1) + rest * rest) / (rest + e_y)
