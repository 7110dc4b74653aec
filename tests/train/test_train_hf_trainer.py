"""The trainer engine (transformers' Trainer): the same losses and weights as the plain loop,
resume after a kill, early stopping and divergence, run keys that leave the loop's alone, and
the same command under ``accelerate launch`` on two processes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from goracs.errors import GoracsError
from goracs.train import TrainSettings
from goracs.train.manifest import ADAPTER_FILES, MANIFEST

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")

from goracs.train import hf  # noqa: E402
from goracs.train import trainer as ft  # noqa: E402

RECORDS = [{"instruction": "Say Yes or No.", "input": f"likes {x}; target {y}", "output": a}
           for x, y, a in [("a", "b", "Yes"), ("cc", "d", "No"), ("e", "ff", "Yes"),
                           ("g", "h", "No"), ("ii", "jj", "Yes"), ("k", "ll", "No"),
                           ("m", "n", "Yes")]]
VALID = RECORDS[:3]
# the settings of a run before `engine` existed: its key must not change
LOOP_KEYS = ["lora_r", "lora_alpha", "lora_dropout", "target_modules", "lr", "epochs",
             "batch_size", "micro_batch_size", "cutoff_len", "warmup_steps", "weight_decay",
             "max_grad_norm", "loss", "seed", "early_stopping", "max_valid", "dtype"]


@pytest.fixture
def tiny(monkeypatch, char_tokenizer):
    """Make `finetune` load a two-layer random Llama with the character tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    def load(model, adapter=None, *, dtype="fp32", device="cpu", trainable_adapter=False):
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=512, initializer_range=0.2)
        identity = {"model": "tiny", "model_files": "id:tiny", "dtype": dtype,
                    "adapter": None, "adapter_files": None}
        return LlamaForCausalLM(config).to(device), char_tokenizer, identity

    monkeypatch.setattr(ft, "load_lm", load)


def _settings(**changes):
    base = TrainSettings(lr=1e-2, epochs=2, batch_size=4, micro_batch_size=2, cutoff_len=256,
                         lora_dropout=0.0, warmup_steps=1, weight_decay=0.01,
                         max_grad_norm=1.0)
    return base.updated(**changes).validate()


def _weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def _run(out: Path, **changes):
    return ft.finetune(RECORDS, out, _settings(**changes), valid_records=VALID, device="cpu",
                       progress=False)


def test_the_trainer_engine_trains_as_the_loop_does(tiny, tmp_path):
    # warm-up, weight decay, clipping, two micro-batches a step and a short last batch
    loop = _run(tmp_path / "loop", engine="loop")
    hf_run = _run(tmp_path / "trainer", engine="trainer")
    assert loop["engine"] == "loop" and hf_run["engine"] == "trainer"
    assert hf_run["processes"] == 1 and hf_run["steps"] == loop["steps"]
    for a, b in zip(loop["history"], hf_run["history"], strict=True):
        assert a["epoch"] == b["epoch"]
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-5)
        assert b["valid_loss"] == pytest.approx(a["valid_loss"], abs=1e-5)
    w1, w2 = _weights(tmp_path / "loop"), _weights(tmp_path / "trainer")
    assert w1.keys() == w2.keys()
    for k in w1:
        np.testing.assert_allclose(w2[k], w1[k], rtol=1e-4, atol=1e-6)
    assert any(np.abs(w).max() > 0 for k, w in w1.items() if "lora_B" in k)
    assert sorted(p.name for p in (tmp_path / "trainer").iterdir()) == \
        sorted([*ADAPTER_FILES, MANIFEST])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loop", "trainer"]


def test_a_killed_run_resumes_to_the_same_weights(tiny, tmp_path, monkeypatch):
    changes = {"engine": "trainer", "epochs": 3, "lora_dropout": 0.1}
    straight = _run(tmp_path / "straight", **changes)
    real_save = hf.EpochRecorder.on_save

    def save_then_stop(self, args, state, control, **kwargs):
        real_save(self, args, state, control, **kwargs)
        if self.progress.epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(hf.EpochRecorder, "on_save", save_then_stop)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        _run(out, **changes)
    monkeypatch.setattr(hf.EpochRecorder, "on_save", real_save)
    ckdir = tmp_path / ".resumed.checkpoints"
    assert not out.exists() and (ckdir / "epoch-0001" / "adapter_model.safetensors").is_file()
    with pytest.raises(GoracsError, match="different run"):
        _run(out, **{**changes, "engine": "loop"})
    resumed = _run(out, **changes)
    assert resumed["resumed_from_epoch"] == 1
    assert [{**h, "seconds": 0} for h in resumed["history"]] == \
        [{**h, "seconds": 0} for h in straight["history"]]
    w1, w2 = _weights(tmp_path / "straight"), _weights(out)
    assert all(np.array_equal(w1[k], w2[k]) for k in w1)
    assert not ckdir.exists()
    # a finished run is reused, not trained again
    from goracs.train import manifest

    monkeypatch.setattr(manifest, "_same_model", lambda files, model: files == "id:tiny")
    stamp = (out / "adapter_model.safetensors").stat().st_mtime_ns
    assert _run(out, **changes)["history"] == resumed["history"]
    assert (out / "adapter_model.safetensors").stat().st_mtime_ns == stamp


def test_early_stopping_keeps_the_best_epoch(tiny, tmp_path):
    changes = {"epochs": 6, "early_stopping": 1, "lr": 1.0, "max_grad_norm": None}
    loop = _run(tmp_path / "loop", engine="loop", **changes)
    hf_run = _run(tmp_path / "trainer", engine="trainer", **changes)
    assert hf_run["stopped_early"] == loop["stopped_early"]
    assert len(hf_run["history"]) == len(loop["history"]) < 6
    assert hf_run["best_epoch"] == loop["best_epoch"] == hf_run["final_epoch"]
    best = min(hf_run["history"], key=lambda h: h["valid_loss"])
    assert hf_run["best_valid_loss"] == best["valid_loss"]


def test_a_diverging_run_stops_and_keeps_nothing(tiny, tmp_path):
    with pytest.raises(GoracsError, match=r"training diverged: the loss is (nan|inf) at epoch"):
        _run(tmp_path / "adapter", engine="trainer", lr=1e12, max_grad_norm=None, epochs=4,
             batch_size=2, micro_batch_size=1)
    assert list(tmp_path.iterdir()) == []


def test_the_engine_leaves_the_loop_keys_alone():
    loop = TrainSettings()
    assert list(loop.to_dict()) == LOOP_KEYS
    trainer = TrainSettings(engine="trainer", gradient_checkpointing=True).validate()
    assert trainer.to_dict() == {**loop.to_dict(), "engine": "trainer",
                                 "gradient_checkpointing": True}
    with pytest.raises(GoracsError, match="engine must be one of"):
        TrainSettings(engine="deepspeed").validate()
    with pytest.raises(GoracsError, match="needs the trainer engine"):
        TrainSettings(gradient_checkpointing=True).validate()


def test_the_loss_follows_the_whole_batch_tokens(tiny_lora, char_tokenizer):
    """A micro-batch's loss through the model's forward with logits at the label positions
    only is the loop's summed loss."""
    from goracs.train import encode_records
    from goracs.train.encoding import Encoded
    from goracs.train.loss import summed_loss

    enc = Encoded(*encode_records(char_tokenizer, RECORDS, 256, "response"))
    batch = enc.micro_batch([0, 1, 4], 0, "cpu")
    ref, n_ref = summed_loss(tiny_lora, batch)
    for keep in (True, False):
        loss, n = hf.forward_summed_loss(tiny_lora, batch, keep)
        assert n == n_ref == int(hf.label_tokens(batch))
        assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    assert hf.keeps_logits(tiny_lora)
    sampler = hf.EpochSampler(7, 3)
    sampler.set_epoch(1)
    assert list(sampler) == np.random.default_rng([3, 1]).permutation(7).tolist()


def test_gradient_checkpointing_gives_the_same_step(tiny, tmp_path):
    plain = _run(tmp_path / "a", engine="trainer", epochs=1)
    ckpt = _run(tmp_path / "b", engine="trainer", epochs=1, gradient_checkpointing=True)
    assert ckpt["settings"]["gradient_checkpointing"] is True
    assert ckpt["history"][0]["train_loss"] == pytest.approx(plain["history"][0]["train_loss"],
                                                             abs=1e-6)
    w1, w2 = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    for k in w1:
        np.testing.assert_allclose(w2[k], w1[k], rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A two-layer random Llama saved with the packaged SmolLM2 tokenizer, openable by path."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from goracs.models import resolve_llm

    folder = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(resolve_llm(None))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _cli_args(tmp_path: Path, model: Path, out: str) -> list[str]:
    (tmp_path / "train.json").write_text(json.dumps(RECORDS[:6] + RECORDS[:2]))
    (tmp_path / "valid.json").write_text(json.dumps(VALID))
    return ["finetune", "--data", str(tmp_path / "train.json"), "--valid",
            str(tmp_path / "valid.json"), "--model", str(model), "--out", str(tmp_path / out),
            "--epochs", "2", "--batch-size", "4", "--micro-batch-size", "2", "--lr", "1e-2",
            "--lora-dropout", "0", "--cutoff-len", "256", "--device", "cpu", "--threads", "1",
            "--quiet"]


def test_the_cli_trains_with_the_trainer_by_default(tiny_model_dir, tmp_path, capsys):
    from goracs.cli import main

    assert main(_cli_args(tmp_path, tiny_model_dir, "a")) == 0
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'a'}: 8 samples, 2 epochs")
    doc = json.loads((tmp_path / "a" / MANIFEST).read_text())
    assert doc["engine"] == doc["settings"]["engine"] == "trainer"
    assert main([*_cli_args(tmp_path, tiny_model_dir, "b"), "--engine", "loop"]) == 0
    doc = json.loads((tmp_path / "b" / MANIFEST).read_text())
    assert doc["engine"] == "loop" and "engine" not in doc["settings"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_accelerate_launch_runs_the_same_command_on_two_processes(tiny_model_dir, tmp_path):
    """Two CPU processes (accelerate's torchrun launcher, gloo): one adapter folder, written by
    the main process, with the one-process run's losses and weights."""
    from goracs.cli import main

    args = _cli_args(tmp_path, tiny_model_dir, "one")
    assert main(args) == 0
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
              "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
              "-m", "goracs.cli", *_cli_args(tmp_path, tiny_model_dir, "two")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(launch, capture_output=True, text=True, env=env, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1
    one = json.loads((tmp_path / "one" / MANIFEST).read_text())
    two = json.loads((tmp_path / "two" / MANIFEST).read_text())
    assert two["processes"] == 2 and one["processes"] == 1
    for a, b in zip(one["history"], two["history"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-5)
        assert b["valid_loss"] == pytest.approx(a["valid_loss"], abs=1e-5)
    w1, w2 = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for k in w1:
        np.testing.assert_allclose(w2[k], w1[k], rtol=1e-4, atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == \
        sorted([*ADAPTER_FILES, MANIFEST])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    shutil.rmtree(tmp_path / "one")


@pytest.mark.slow
def test_smollm2_ctr_losses_match_between_engines(tmp_path):
    """The packaged SmolLM2 on CTR records, two seeded epochs without LoRA dropout: per-epoch
    losses within 1e-4 and the same adapter from both engines. (With dropout the masks differ:
    the Trainer's data loader draws from torch's generator each epoch, the loop does not.)"""
    from test_train_smoke import CTR_TRAIN, CTR_VALID

    runs = {}
    for engine in ("loop", "trainer"):
        settings = TrainSettings(epochs=2, batch_size=2, micro_batch_size=1, cutoff_len=256,
                                 lora_dropout=0.0, engine=engine)
        runs[engine] = ft.finetune(CTR_TRAIN, tmp_path / engine, settings,
                                   valid_records=CTR_VALID, device="cpu", progress=False)
    for a, b in zip(runs["loop"]["history"], runs["trainer"]["history"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-4)
        assert b["valid_loss"] == pytest.approx(a["valid_loss"], abs=1e-4)
    w1, w2 = _weights(tmp_path / "loop"), _weights(tmp_path / "trainer")
    for k in w1:
        np.testing.assert_allclose(w2[k], w1[k], rtol=1e-3, atol=1e-6)
