"""The epochs: an optimizer step that does not depend on the micro-batch split, a checkpoint
and a history record per epoch, early stopping, and a diverging run that keeps nothing."""

from __future__ import annotations

import pytest

from goracs.errors import GoracsError
from goracs.train import TrainSettings, encode_records
from goracs.train.checkpoints import Progress, list_checkpoints
from goracs.train.encoding import Encoded
from goracs.train.loop import Training, run_epochs

torch = pytest.importorskip("torch")

RECORDS = [{"instruction": "Say Yes or No.", "input": f"likes {x}; target {y}", "output": a}
           for x, y, a in [("a", "b", "Yes"), ("cc", "d", "No"), ("e", "ff", "Yes"),
                           ("g", "h", "No"), ("ii", "jj", "Yes")]]


def _job(model, tok, ckdir, valid=(), **changes):
    settings = TrainSettings(lr=1e-2, epochs=2, batch_size=4, micro_batch_size=4,
                             cutoff_len=256).updated(**changes).validate()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.lr)
    ckdir.mkdir(exist_ok=True)
    enc = Encoded(*encode_records(tok, RECORDS, settings.cutoff_len, settings.loss))
    venc = Encoded(*encode_records(tok, list(valid), settings.cutoff_len, settings.loss))
    return Training(model=model, trainable=trainable, optimizer=optimizer, train=enc,
                    valid=venc, pad_id=0, settings=settings, device="cpu", ckdir=ckdir)


def _weights(model):
    return [p.detach().clone() for p in model.parameters() if p.requires_grad]


def test_a_step_does_not_depend_on_the_micro_batch_split(tiny_lora, char_tokenizer,
                                                         tmp_path):
    import copy

    twin = copy.deepcopy(tiny_lora)
    whole = _job(tiny_lora, char_tokenizer, tmp_path / "a")
    split = _job(twin, char_tokenizer, tmp_path / "b", micro_batch_size=1)
    assert whole.steps_per_epoch == 2 and whole.total_steps == 4
    p1, p2 = Progress(), Progress()
    run_epochs(whole, p1, desc="t", show=False)
    run_epochs(split, p2, desc="t", show=False)
    assert p1.step == p2.step == 4
    for h1, h2 in zip(p1.history, p2.history, strict=True):
        assert h1["train_loss"] == pytest.approx(h2["train_loss"], rel=1e-5)
    for a, b in zip(_weights(tiny_lora), _weights(twin), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert any(a.abs().max() > 0 for a in _weights(tiny_lora))


def test_each_epoch_is_recorded_and_checkpointed(tiny_lora, char_tokenizer, tmp_path):
    job = _job(tiny_lora, char_tokenizer, tmp_path / "ck", valid=RECORDS[:2], epochs=3)
    progress = Progress()
    seconds = run_epochs(job, progress, desc="t", show=False)
    assert seconds >= 0 and progress.epoch == 3 and progress.step == 6
    assert [h["epoch"] for h in progress.history] == [1, 2, 3]
    assert all(set(h) == {"epoch", "train_loss", "valid_loss", "seconds"}
               for h in progress.history)
    best = min(progress.history, key=lambda h: h["valid_loss"])
    assert (progress.best_epoch, progress.best_valid) == (best["epoch"], best["valid_loss"])
    kept = {int(p.name.split("-")[1]) for p in list_checkpoints(job.ckdir)}
    assert kept == {3, progress.best_epoch}
    # a second call after the last epoch trains no further
    run_epochs(job, progress, desc="t", show=False)
    assert (progress.epoch, progress.step, len(progress.history)) == (3, 6, 3)


def test_early_stopping_ends_the_run_after_patience_epochs(tiny_lora, char_tokenizer,
                                                           tmp_path):
    job = _job(tiny_lora, char_tokenizer, tmp_path / "ck", valid=RECORDS[:2], epochs=6,
               early_stopping=1, lr=1.0)
    progress = Progress()
    run_epochs(job, progress, desc="t", show=False)
    losses = [h["valid_loss"] for h in progress.history]
    assert progress.stopped_early and len(losses) < 6
    assert losses[-1] >= losses[-2] and progress.best_epoch == len(losses) - 1


def test_a_diverging_run_stops_and_removes_its_checkpoints(tiny_lora, char_tokenizer,
                                                           tmp_path):
    job = _job(tiny_lora, char_tokenizer, tmp_path / "ck", lr=1e12, epochs=4, batch_size=1,
               micro_batch_size=1)
    with pytest.raises(GoracsError, match=r"training diverged: the loss is (nan|inf) at epoch"):
        run_epochs(job, Progress(), desc="t", show=False)
    assert not job.ckdir.exists()
