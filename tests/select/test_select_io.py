"""goracs.select.io: a prepared folder's selection inputs in (default or LLM embeddings, score
files, the checks), a selection's files out (coreset and manifest, all or nothing)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from goracs.cache import path_fingerprint
from goracs.errors import GoracsError
from goracs.outputs import OutputPlace
from goracs.select import SelectionData, get_selector
from goracs.select import io as sio


def _folder(tmp: Path, task: str = "ctr", n: int = 30, v: int = 10, scores: bool = True,
            llm: bool = False, meta_task: bool = True) -> Path:
    """A prepared folder with computed features, as `goracs prepare` + `goracs features`
    leave it (arrays synthetic)."""
    rng = np.random.default_rng(2)
    d = tmp / f"prep-{task}"
    feats = d / "features"
    feats.mkdir(parents=True)
    train = [{"instruction": "i", "input": f"s {k}", "output": "Yes" if k % 2 else "No"}
             for k in range(n)]
    (d / "train.json").write_text(json.dumps(train))
    (d / "valid.json").write_text(json.dumps(train[:v]))
    (d / "meta.json").write_text(json.dumps({"task": task} if meta_task else {}))
    np.save(feats / "train_emb.npy", rng.normal(size=(n, 4)).astype(np.float32))
    np.save(feats / "valid_emb.npy", rng.normal(size=(v, 4)).astype(np.float32))
    np.save(feats / "grad_norms.npy", rng.uniform(1, 2, n).astype(np.float32))
    np.save(feats / "train_labels.npy", (np.arange(n) % 2).astype(np.int32))
    np.save(feats / "valid_labels.npy", (np.arange(v) % 2).astype(np.int32))
    if scores:
        np.save(feats / "el2n.npy", rng.uniform(0, 1, n).astype(np.float32))
    if llm:
        np.save(feats / "llm_train_emb.npy", rng.normal(size=(n, 7)).astype(np.float32))
        np.save(feats / "llm_valid_emb.npy", rng.normal(size=(v, 7)).astype(np.float32))
    (feats / "features.json").write_text(json.dumps({
        "task": task, "digests": {"train": path_fingerprint(d / "train.json"),
                                  "valid": path_fingerprint(d / "valid.json")}}))
    return d


# -- reading ----------------------------------------------------------------------------------

def test_folder_task_from_meta_or_given_and_they_must_agree(tmp_path):
    d = _folder(tmp_path)
    assert sio.folder_task(d) == "ctr"
    assert sio.folder_task(d, "ctr") == "ctr"
    with pytest.raises(GoracsError, match=r"--task seqrec: .*meta\.json names the ctr task"):
        sio.folder_task(d, "seqrec")
    with pytest.raises(GoracsError, match="task must be one of"):
        sio.folder_task(d, "ranking")
    bare = _folder(tmp_path / "b", meta_task=False)
    assert sio.folder_task(bare, "seqrec") == "seqrec"


def test_check_features_needs_computed_current_features(tmp_path):
    d = _folder(tmp_path)
    assert sio.check_features(d, "ctr")["task"] == "ctr"
    with pytest.raises(GoracsError, match="computed for the ctr task, not seqrec"):
        sio.check_features(d, "seqrec")
    (d / "train.json").write_text("[]")
    with pytest.raises(GoracsError, match=r"train\.json changed since its features"):
        sio.check_features(d, "ctr")
    (d / "features" / "features.json").unlink()
    with pytest.raises(GoracsError, match=r"no computed features \(run `goracs features"):
        sio.check_features(d, "ctr")


def test_selection_files_default_and_llm(tmp_path):
    d = _folder(tmp_path, llm=True)
    feats = d / "features"
    arrays, scores = sio.selection_files(d)
    assert arrays == {f: feats / f"{f}.npy" for f in
                      ("train_emb", "valid_emb", "grad_norms", "train_labels", "valid_labels")}
    assert scores == {"el2n": feats / "el2n.npy"}
    llm, scores_llm = sio.selection_files(d, "llm")
    assert list(llm) == list(arrays)  # the same fields in the same order, two files swapped
    assert llm["train_emb"] == feats / "llm_train_emb.npy"
    assert llm["valid_emb"] == feats / "llm_valid_emb.npy"
    assert {k: p for k, p in llm.items() if "emb" not in k} == \
        {k: p for k, p in arrays.items() if "emb" not in k}
    assert scores_llm == scores


def test_missing_llm_embeddings_name_the_first_file(tmp_path):
    d = _folder(tmp_path)
    with pytest.raises(sio.MissingEmbeddings) as info:
        sio.selection_files(d, "llm")
    assert info.value.path == d / "features" / "llm_train_emb.npy"
    assert str(info.value) == (f"--embedding llm: {d / 'features' / 'llm_train_emb.npy'} not "
                               f"found (run `goracs features {d} --embedding both`)")
    assert isinstance(info.value, GoracsError)
    np.save(d / "features" / "llm_train_emb.npy", np.ones((30, 3), np.float32))
    with pytest.raises(sio.MissingEmbeddings, match="llm_valid_emb.npy not found"):
        sio.read_embeddings(d, "llm")
    with pytest.raises(GoracsError, match="embedding must be one of default, llm"):
        sio.embedding_files(d, "tfidf")


def test_read_prepared_loads_arrays_scores_and_casts_labels(tmp_path):
    d = _folder(tmp_path, llm=True)
    data = sio.read_prepared(d)
    feats = d / "features"
    np.testing.assert_array_equal(data.train_emb, np.load(feats / "train_emb.npy"))
    assert set(data.scores) == {"el2n"} and data.n_train == 30
    assert data.train_labels.dtype == np.int64 and data.valid_labels.dtype == np.int64
    raw = sio.read_prepared(d, check=False)  # unchecked: loaded as stored
    assert raw.train_labels.dtype == np.int32
    # embeddings are mapped read-only, not copied into memory
    assert isinstance(raw.train_emb, np.memmap) and not raw.train_emb.flags.writeable
    llm = sio.read_prepared(d, "llm")
    assert llm.train_emb.shape == (30, 7) and llm.valid_emb.shape == (10, 7)
    emb = sio.read_embeddings(d, "llm")
    assert list(emb) == ["train_emb", "valid_emb"]
    np.testing.assert_array_equal(emb["valid_emb"], llm.valid_emb)


def test_checks_name_flags_or_files(tmp_path):
    d = _folder(tmp_path)
    feats = d / "features"
    grads = np.load(feats / "grad_norms.npy")
    grads[4] = -1.0
    np.save(feats / "grad_norms.npy", grads)
    arrays, scores = sio.selection_files(d)
    with pytest.raises(GoracsError, match=r"^--grad-norms: must be non-negative$"):
        sio.load_selection_data(arrays, scores)
    with pytest.raises(GoracsError, match=rf"^{feats / 'grad_norms.npy'}: must be non-negative"):
        sio.read_prepared(d)
    # unchecked, the arrays load; each selector's fit checks what it reads
    data = sio.read_prepared(d, check=False)
    with pytest.raises(GoracsError, match="grad-norms must be non-negative"):
        get_selector("grand")(5).fit(data)
    np.save(feats / "el2n.npy", np.ones((30, 2)))
    with pytest.raises(GoracsError, match=r"^--score el2n: must be a 1-D array"):
        sio.load_selection_data({}, {"el2n": feats / "el2n.npy"})
    with pytest.raises(GoracsError, match=rf"^{feats / 'el2n.npy'}: must be a 1-D array"):
        sio.load_selection_data({}, {"el2n": feats / "el2n.npy"}, by_path=True)


def test_check_selection_arrays_embeddings_and_labels():
    data = SelectionData(train_emb=np.full((4, 2), 1e300), valid_emb=np.ones((2, 2)))
    with pytest.raises(GoracsError, match="--train-emb: contains NaN or inf once cast to float32"):
        sio.check_selection_arrays(data)
    data = SelectionData(train_emb=np.full((4, 2), 1e16, np.float32))
    with pytest.raises(GoracsError, match="values reach 1e\\+16"):
        sio.check_selection_arrays(data, {"train_emb": "A.npy"})
    data = SelectionData(train_labels=np.array([0.0, 1.0]), valid_labels=np.array([1, 0]))
    sio.check_selection_arrays(data)
    assert data.train_labels.dtype == np.int64
    data = SelectionData(train_labels=np.array([0.5, 1.0]))
    with pytest.raises(GoracsError, match="^labels.npy: must hold whole numbers"):
        sio.check_selection_arrays(data, {"train_labels": "labels.npy"})


def test_scores_are_read_before_arrays(tmp_path):
    """The first unreadable file reported is a score file, then the arrays in field order
    (as `goracs select` always reported them)."""
    with pytest.raises(GoracsError, match="file not found: .*score.npy"):
        sio.load_selection_data({"train_emb": tmp_path / "emb.npy"},
                                {"x": tmp_path / "score.npy"})
    with pytest.raises(GoracsError, match="file not found: .*emb.npy"):
        sio.load_selection_data({"valid_emb": tmp_path / "v.npy",
                                 "train_emb": tmp_path / "emb.npy"})


def test_check_pool():
    sio.check_pool([{}] * 3, 3, "D")
    with pytest.raises(GoracsError,
                       match=r"^D/train\.json does not match its features \(4 rows\)$"):
        sio.check_pool([{}] * 3, 4, "D")
    with pytest.raises(GoracsError, match=r"\(4 rows\); rerun"):
        sio.check_pool([{}] * 3, 4, "D", "; rerun")


# -- writing ----------------------------------------------------------------------------------

def test_write_selection_coreset_then_manifest_swapped_in_whole(tmp_path, monkeypatch):
    out = tmp_path / "sel"
    records = [{"input": f"r{k}"} for k in range(6)]
    written: list[str] = []
    real = sio.atomic_write_json

    def spy(path, obj, *args, **kwargs):
        written.append(Path(path).name)
        assert not out.exists() or Path(path).parent != out  # never inside the live folder
        return real(path, obj, *args, **kwargs)

    monkeypatch.setattr(sio, "atomic_write_json", spy)
    manifest = {"method": "x", "indices": [1, 4]}
    path = sio.write_selection(OutputPlace(out, "select").check(), manifest, records)
    assert written == ["coreset.json", "selection.json"]  # the manifest last
    assert path == out.resolve() / "selection.json"
    assert json.loads((out / "selection.json").read_text()) == manifest
    assert json.loads((out / "coreset.json").read_text()) == [records[1], records[4]]
    # a later selection without records replaces the earlier one whole: no stale coreset.json
    sio.write_selection(OutputPlace(out, "select").check(), {"method": "y", "indices": [0]})
    assert sorted(p.name for p in out.iterdir()) == ["selection.json"]
    assert json.loads((out / "selection.json").read_text())["method"] == "y"
    assert not [p for p in tmp_path.iterdir() if ".goracs-" in p.name]


def test_write_selection_keeps_the_manifest_order(tmp_path):
    manifest = {"method": "m", "budget": 1, "indices": [0], "inputs": {}, "data": "D"}
    sio.write_selection(OutputPlace(tmp_path / "o", "select").check(), manifest)
    assert list(json.loads((tmp_path / "o" / "selection.json").read_text())) == list(manifest)
