"""Content keys: any change to texts, model files or settings gives a new key."""

from __future__ import annotations

from goracs.cache import content_key, path_fingerprint, texts_digest


def test_texts_digest_sees_content_order_and_boundaries():
    base = texts_digest(["ab", "c"])
    assert texts_digest(["ab", "c"]) == base
    assert texts_digest(["a", "bc"]) != base
    assert texts_digest(["c", "ab"]) != base
    assert texts_digest(["ab", "c", ""]) != base
    assert texts_digest(["ab", "d"]) != base


def test_path_fingerprint_follows_file_content(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 4}')
    first = path_fingerprint(model)
    assert first.startswith("files:") and path_fingerprint(model) == first
    (model / "config.json").write_text('{"hidden_size": 5}')
    assert path_fingerprint(model) != first
    (model / "config.json").write_text('{"hidden_size": 4}')
    assert path_fingerprint(model) == first
    (model / "extra.txt").write_text("x")
    assert path_fingerprint(model) != first


def test_path_fingerprint_of_a_name_is_the_name():
    assert path_fingerprint("org/some-model") == "id:org/some-model"
    assert path_fingerprint("org/other-model") != path_fingerprint("org/some-model")


def test_content_key_is_stable_and_order_free():
    a = content_key({"texts": "x", "settings": {"b": 1, "a": [1, 2]}})
    assert a == content_key({"settings": {"a": [1, 2], "b": 1}, "texts": "x"})
    assert len(a) == 24 and a != content_key({"texts": "x", "settings": {"b": 2, "a": [1, 2]}})
