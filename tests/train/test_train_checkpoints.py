"""Per-epoch checkpoints: a round trip restores the adapter, the optimizer and the random
state; older epochs go but the best; a run resumes from its own checkpoints and refuses those
of another run."""

from __future__ import annotations

import json
import math

import pytest

from goracs.errors import GoracsError
from goracs.train.checkpoints import (
    Progress,
    checkpoint_dir,
    checkpoint_key,
    epoch_dir,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    start_or_resume,
)
from goracs.train.encoding import micro_batch
from goracs.train.loss import summed_loss

torch = pytest.importorskip("torch")


def _optimizer(model):
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)


def _step(model, optimizer, ids):
    optimizer.zero_grad()
    loss, _ = summed_loss(model, micro_batch([ids], [ids], 0, "cpu"))
    loss.backward()
    optimizer.step()


def _adapter(model):
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def test_a_checkpoint_round_trip_restores_weights_optimizer_and_random_state(tiny_lora,
                                                                             tmp_path):
    opt = _optimizer(tiny_lora)
    _step(tiny_lora, opt, [1, 5, 6, 7])
    _step(tiny_lora, opt, [1, 8, 9])
    ckdir = tmp_path / "ck"
    ckdir.mkdir()
    progress = Progress(epoch=1, step=2, best_epoch=1, best_valid=0.25,
                        history=[{"epoch": 1, "train_loss": 3.0, "valid_loss": 0.25,
                                  "seconds": 0.5}])
    torch.manual_seed(5)
    save_checkpoint(ckdir, 1, tiny_lora, opt, progress.state(1.5), keep={1})
    draws = torch.rand(4)  # what the restored random state must draw next
    weights, moments = _adapter(tiny_lora), {
        k: {n: t.clone() for n, t in v.items() if torch.is_tensor(t)}
        for k, v in opt.state_dict()["state"].items()}
    names = {p.name for p in epoch_dir(ckdir, 1).iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "state.json",
            "trainer_state.pt"} <= names

    _step(tiny_lora, opt, [1, 10, 11, 12])  # the run goes on, then is killed
    torch.manual_seed(99)
    state = load_checkpoint(epoch_dir(ckdir, 1), tiny_lora, opt, "cpu")
    assert state == progress.state(1.5)
    assert torch.equal(torch.rand(4), draws)
    after = _adapter(tiny_lora)
    assert after.keys() == weights.keys()
    assert all(torch.equal(after[k], weights[k]) for k in weights)
    got = opt.state_dict()["state"]
    assert got.keys() == moments.keys()
    assert all(torch.equal(got[k][n], t) for k, v in moments.items() for n, t in v.items())


def test_older_checkpoints_go_except_the_best(tiny_lora, tmp_path):
    opt = _optimizer(tiny_lora)
    ckdir = tmp_path / "ck"
    ckdir.mkdir()
    for epoch in (1, 2, 3):
        save_checkpoint(ckdir, epoch, tiny_lora, opt, Progress(epoch=epoch).state(0.0),
                        keep={1})
    assert [p.name for p in list_checkpoints(ckdir)] == ["epoch-0001", "epoch-0003"]
    assert sorted(p.name for p in ckdir.iterdir()) == ["epoch-0001", "epoch-0003"]


def test_progress_survives_its_state():
    fresh = Progress()
    assert fresh.best_valid == math.inf and fresh.state(0.0)["best_valid"] is None
    back = Progress.resumed(json.loads(json.dumps(fresh.state(2.0))))
    assert (back.best_valid, back.seconds_before, back.resumed_from) == (math.inf, 2.0, 0)
    assert list(fresh.state(0.0)) == ["epoch", "step", "history", "best_epoch", "best_valid",
                                      "seconds"]


def test_a_run_resumes_from_its_own_checkpoints_only(tiny_lora, tmp_path, capsys):
    opt = _optimizer(tiny_lora)
    out = tmp_path / "adapter"
    ckdir = checkpoint_dir(out)
    assert ckdir == tmp_path / ".adapter.checkpoints"
    assert start_or_resume(ckdir, "k1", out, tiny_lora, opt, "cpu") == Progress()
    assert checkpoint_key(ckdir) == "k1"
    assert json.loads((ckdir / "run.json").read_text()) == {"run_key": "k1", "out": str(out)}
    # killed before its first checkpoint: starts afresh
    assert start_or_resume(ckdir, "k1", out, tiny_lora, opt, "cpu") == Progress()

    done = Progress(epoch=2, step=4, best_epoch=1, best_valid=0.5,
                    history=[{"epoch": e, "train_loss": 1.0, "valid_loss": 0.5 + e,
                              "seconds": 0.1} for e in (1, 2)])
    save_checkpoint(ckdir, 2, tiny_lora, opt, done.state(7.0), keep={1})
    capsys.readouterr()
    resumed = start_or_resume(ckdir, "k1", out, tiny_lora, opt, "cpu")
    assert resumed == Progress(epoch=2, step=4, history=done.history, best_epoch=1,
                               best_valid=0.5, seconds_before=7.0, resumed_from=2)
    assert f"resuming {out} after epoch 2" in capsys.readouterr().err

    with pytest.raises(GoracsError, match="holds checkpoints of a different run"):
        start_or_resume(ckdir, "k2", out, tiny_lora, opt, "cpu")
    (ckdir / "run.json").write_text("not json")
    assert checkpoint_key(ckdir) is None
    with pytest.raises(GoracsError, match="different run"):
        start_or_resume(ckdir, "k1", out, tiny_lora, opt, "cpu")
    assert [p.name for p in list_checkpoints(ckdir)] == ["epoch-0002"]
