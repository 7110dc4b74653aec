"""Embeddings with the packaged all-MiniLM-L6-v2 encoder: values, cache and resumption."""

from __future__ import annotations

import numpy as np
import pytest
from features_helpers import seqrec_records

from goracs.errors import GoracsError
from goracs.features import embeddings as emb_mod
from goracs.features.embeddings import embed_texts, embedding_key, load_encoder
from goracs.records import embedding_texts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def encoder():
    return load_encoder(None)


@pytest.fixture(scope="module")
def texts():
    return embedding_texts(seqrec_records(7), "seqrec")


def test_embeddings_are_float32_rows_from_the_encoder(encoder, texts):
    got = embed_texts(texts, progress=False, model=encoder)
    assert got.shape == (7, 384) and got.dtype == np.float32
    direct = encoder.encode(texts[:1], convert_to_numpy=True)
    np.testing.assert_allclose(got[0], direct[0], rtol=0, atol=1e-5)
    # The packaged encoder ends in a Normalize layer; distinct samples stay distinct.
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert np.linalg.norm(got[0] - got[1]) > 1e-3


def test_cache_is_hit_and_keyed_by_content(encoder, texts, tmp_path, monkeypatch):
    first = embed_texts(texts, cache_dir=tmp_path, progress=False, model=encoder)
    assert len(list(tmp_path.glob("emb-*.npy"))) == 1

    def no_loading(*args, **kwargs):
        raise AssertionError("the encoder was loaded although the cache holds the result")

    monkeypatch.setattr(emb_mod, "load_encoder", no_loading)
    again = embed_texts(texts, cache_dir=tmp_path, progress=False)
    assert again.tobytes() == first.tobytes()

    path = str(emb_mod.resolve_encoder(None))
    settings = {"batch_size": 64, "max_seq_length": None, "normalize": False, "dtype": "fp32",
                "chunk": emb_mod.CHUNK}
    key = embedding_key(texts, path, settings)
    assert (tmp_path / f"emb-{key}.npy").is_file()
    assert embedding_key(texts[:-1] + [texts[-1] + " "], path, settings) != key
    assert embedding_key(texts, "org/another-encoder", settings) != key
    assert embedding_key(texts, path, {**settings, "max_seq_length": 128}) != key
    assert embedding_key(texts, path, {**settings, "dtype": "bf16"}) != key


def test_interrupted_embedding_resumes_from_finished_chunks(encoder, texts, tmp_path,
                                                            monkeypatch):
    monkeypatch.setattr(emb_mod, "CHUNK", 3)
    whole = embed_texts(texts, progress=False, model=encoder)
    calls = []
    real_encode = encoder.encode

    def failing_encode(batch, **kwargs):
        calls.append(len(batch))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_encode(batch, **kwargs)

    monkeypatch.setattr(encoder, "encode", failing_encode)
    with pytest.raises(KeyboardInterrupt):
        embed_texts(texts, cache_dir=tmp_path, progress=False, model=encoder)
    parts = sorted(p.name for p in tmp_path.glob("emb-*.parts/*.npy"))
    assert parts == ["part-00000.npy"] and not list(tmp_path.glob("emb-*.npy"))

    calls.clear()
    monkeypatch.setattr(encoder, "encode", lambda batch, **kw: (calls.append(len(batch)),
                                                              real_encode(batch, **kw))[1])
    resumed = embed_texts(texts, cache_dir=tmp_path, progress=False, model=encoder)
    assert calls == [3, 1]  # chunks 2 and 3 only
    assert resumed.tobytes() == whole.tobytes()
    assert not list(tmp_path.glob("emb-*.parts"))


def test_bad_embedding_requests_fail_clearly(encoder):
    with pytest.raises(GoracsError, match="empty"):
        embed_texts([], model=encoder)
    with pytest.raises(GoracsError, match="batch size"):
        embed_texts(["a"], batch_size=0, model=encoder)
    with pytest.raises(GoracsError, match="encoder dtype"):
        load_encoder(None, dtype="fp8")
