"""The training loss: the model's own next-token loss, summed over label tokens; the
validation loss, a token mean whatever the micro-batch size."""

import math

import pytest

from goracs.train import validation_loss
from goracs.train.encoding import IGNORE, micro_batch
from goracs.train.loss import summed_loss

torch = pytest.importorskip("torch")

IDS = [[1, 5, 6, 7, 8], [1, 9, 10], [1, 11, 12, 13]]
LABELS = [[IGNORE, IGNORE, 6, 7, 8], [1, 9, 10], [IGNORE, IGNORE, IGNORE, 13]]


def test_summed_loss_is_the_models_mean_loss_times_its_tokens(tiny_lora):
    batch = micro_batch(IDS, LABELS, 0, "cpu")
    with torch.no_grad():
        loss, n = summed_loss(tiny_lora, batch)
        mean = tiny_lora(**batch).loss
    assert n == 3 + 2 + 1
    assert float(loss) / n == pytest.approx(float(mean), rel=1e-5)


def test_validation_loss_is_a_token_mean_whatever_the_micro_batch(tiny_lora):
    tiny_lora.train()
    with torch.no_grad():
        parts = [summed_loss(tiny_lora.eval(), micro_batch([i], [lab], 0, "cpu"))
                 for i, lab in zip(IDS, LABELS, strict=True)]
    tiny_lora.train()
    want = sum(float(x) for x, _ in parts) / sum(n for _, n in parts)
    for size in (1, 2, 3):
        assert validation_loss(tiny_lora, IDS, LABELS, size, 0, "cpu") == \
            pytest.approx(want, rel=1e-5)
    assert tiny_lora.training  # left in the mode it was in
    assert math.isnan(validation_loss(tiny_lora, [[1, 2]], [[IGNORE, IGNORE]], 1, 0, "cpu"))
