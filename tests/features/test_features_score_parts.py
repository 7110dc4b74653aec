"""The parts of the gradient scorer that need no model: blocks, batching, the shared prefix's
length, the loss rows, EL2N's error norms, influence and the shards of a resumable pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from goracs.errors import GoracsError
from goracs.features.batches import pad_batch, processing_order, unsort, unsort_rows
from goracs.features.blocks import _default_block
from goracs.features.el2n import error_norms
from goracs.features.influence import influence
from goracs.features.per_sample import loss_rows
from goracs.features.prefix import common_prefix_length
from goracs.features.shards import cache_files, grad_parts, result_names, score_in_shards


def test_default_block_is_the_last_layers_v_proj_lora_b():
    names = [f"m.layers.{i}.self_attn.{p}.lora_{ab}.default.weight"
             for i in (2, 10, 9) for p in ("q_proj", "v_proj") for ab in "AB"]
    assert _default_block(names) == "m.layers.10.self_attn.v_proj.lora_B.default.weight"
    with pytest.raises(GoracsError, match="no LoRA on v_proj"):
        _default_block(["m.layers.0.self_attn.q_proj.lora_B.default.weight"])


def test_processing_order_padding_and_back():
    ids = [np.array([5, 6, 7], dtype=np.int32), np.array([1, 2], dtype=np.int32),
           np.array([3, 4], dtype=np.int32)]
    order = processing_order(ids, True)
    assert order.tolist() == [1, 2, 0]
    assert processing_order(ids, False).tolist() == [0, 1, 2]
    x, mask = pad_batch([ids[0], ids[1]], 1, 0, "cpu")
    assert x.tolist() == [[6, 7], [2, 0]] and mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    values = unsort([np.array([10.0, 20.0]), np.array([30.0])], order)
    assert values.dtype == np.float32 and values.tolist() == [30.0, 10.0, 20.0]
    rows = unsort_rows([np.eye(2), np.ones((1, 2))], order)
    assert rows.tolist() == [[1, 1], [1, 0], [0, 1]]


def test_shared_prefix_is_all_but_the_last_common_token():
    base = list(range(10, 20))
    assert common_prefix_length([base + [1, 2], base + [3]]) == 9
    assert common_prefix_length([base[:4] + [1], base[:4] + [2]]) == 0  # too short to pay
    assert common_prefix_length([]) == 0


def test_loss_rows_and_weights():
    rows, w = loss_rows("text", 6, 2, None)
    assert rows.tolist() == [2, 3, 4] and w == pytest.approx(1 / 5)
    rows, w = loss_rows("response", 6, 2, 4)
    assert rows.tolist() == [3, 4] and w == pytest.approx(1 / 2)


def test_error_norms_match_the_definition():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(5, 11, generator=gen, dtype=torch.float64) * 4
    z[0, 3] = 40.0  # a confident right answer
    y = torch.tensor([3, 0, 10, 5, 5])
    e = (z - z.amax(dim=1, keepdim=True)).exp()
    truth = (torch.softmax(z, dim=1) - torch.nn.functional.one_hot(y, 11)).norm(dim=1)
    assert torch.allclose(error_norms(e.float(), y), truth, rtol=1e-6, atol=1e-12)


def test_influence_from_shards_in_memory_and_on_disk(tmp_path):
    gen = np.random.default_rng(0)
    g = gen.standard_normal((5, 4))
    np.save(tmp_path / "g1.npy", g[3:])
    got = np.concatenate(influence([g[:3], tmp_path / "g1.npy"], 5))
    assert np.allclose(got, g @ g.mean(axis=0) / 5)


def test_shard_files_and_partial_gradients(tmp_path):
    assert result_names(True, True) == ["gradnorms", "el2n", "influence", "llmemb"]
    assert result_names(False, False) == ["gradnorms"]
    final, parts = cache_files(tmp_path, "k", ["gradnorms", "el2n"])
    assert final == {"gradnorms": tmp_path / "gradnorms-k.npy", "el2n": tmp_path / "el2n-k.npy"}
    assert parts == tmp_path / "gradnorms-k.parts"
    parts.mkdir()
    np.save(parts / "grad-00000.npy", np.zeros((2, 3), dtype=np.float32))
    np.save(parts / "grad-00001.npy", np.zeros((2, 3), dtype=np.float32))  # wrong size
    (parts / "grad-00002.npy").write_bytes(b"not an array")
    assert grad_parts(parts, [2, 1, 1]) == [parts / "grad-00000.npy", None, None]
    assert grad_parts(None, [2]) == [None]


def test_a_pass_in_shards_resumes_and_refuses_non_finite(tmp_path):
    seqs = [np.arange(k + 2, dtype=np.int32) for k in range(5)]
    starts = np.ones(5, dtype=np.int64)
    calls = []

    def batch(seqs_, st):
        calls.append(len(seqs_))
        n = np.array([float(len(s)) for s in seqs_])
        return n, n / 10, np.stack([n, -n], axis=1).astype(np.float32), None

    def run(parts, scores=batch):
        return score_in_shards(seqs, starts, np.arange(5), shard_size=2, batch_size=1,
                               prepare=lambda *a: None, batch_scores=scores,
                               with_scores=True, embed=False, parts=parts, progress=False)

    first = run(tmp_path)
    assert calls == [1] * 5 and first["gradnorms"].tolist() == [2, 3, 4, 5, 6]
    assert sorted(p.name for p in tmp_path.iterdir())[:3] == ["el2n-00000.npy",
                                                                "el2n-00001.npy",
                                                                "el2n-00002.npy"]
    calls.clear()
    again = run(tmp_path)
    assert calls == [] and all(np.array_equal(again[k], first[k]) for k in first)
    with pytest.raises(GoracsError, match="EL2N scores contain NaN or inf"):
        run(None, lambda s, st: (np.ones(len(s)), np.full(len(s), np.nan),
                                 np.ones((len(s), 2), dtype=np.float32), None))
