"""Rendering, reading and labelling of Alpaca records (no models needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from features_helpers import ctr_records, seqrec_records, write_prepared

from goracs.errors import GoracsError
from goracs.records import (
    ctr_labels,
    embedding_texts,
    load_records,
    read_task,
    render_prompt,
    training_texts,
)

REC = {"instruction": "Pick one.", "input": "A, B", "output": '"B"'}


def test_render_prompt_with_input_matches_the_alpaca_template():
    assert render_prompt(REC, with_response=False) == (
        "Below is an instruction that describes a task, paired with an input that provides "
        "further context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nPick one.\n\n### Input:\nA, B\n\n### Response:\n")
    assert render_prompt(REC, with_response=True) == (
        render_prompt(REC, with_response=False) + '"B"')


def test_render_prompt_without_input_drops_the_input_section():
    text = render_prompt({**REC, "input": ""}, with_response=True)
    assert text == ("Below is an instruction that describes a task. Write a response that "
                    "appropriately completes the request.\n\n### Instruction:\nPick one.\n\n"
                    '### Response:\n"B"')


def test_embedding_texts_keep_the_response_for_seqrec_only():
    seq = seqrec_records(2)
    ctr = ctr_records(2)
    assert all(t.endswith(r["output"]) for t, r in zip(embedding_texts(seq, "seqrec"), seq,
                                                       strict=True))
    assert all(t.endswith("### Response:\n") for t in embedding_texts(ctr, "ctr"))
    assert all(t.endswith(r["output"]) for t, r in zip(training_texts(ctr), ctr, strict=True))
    with pytest.raises(GoracsError, match="task must be one of"):
        embedding_texts(seq, "rank")


def test_ctr_labels_are_one_for_yes_and_zero_for_no():
    recs = ctr_records(6)
    got = ctr_labels(recs)
    assert got.dtype == np.int64
    assert got.tolist() == [0, 1, 1, 0, 1, 1]
    with pytest.raises(GoracsError, match="record 1 output must be 'Yes' or 'No'"):
        ctr_labels([recs[0], {**recs[1], "output": "Maybe"}])


def test_load_records_reads_a_prepared_file(tmp_path):
    write_prepared(tmp_path, "seqrec", 3, 2)
    recs = load_records(tmp_path / "train.json")
    assert len(recs) == 3 and recs[0]["user"] == "u0"
    assert read_task(tmp_path) == "seqrec"


@pytest.mark.parametrize("content, message", [
    (None, "file not found"),
    ("{not json", "not (valid )?JSON"),
    ('3', "expected a JSON list of records, got int"),
    ("[]", "no records"),
    ('{"a": 1}', "record 0 has no field 'instruction'"),
    ('{"instruction": "x", "input": "", "output": "o"}\n7', "record 1 is a int"),
    ('[{"instruction": "x", "input": "", "output": "o", "negatives": [1]}]',
     "'negatives' must be a list of strings"),
    ('[{"instruction": "x", "input": "y"}]', "record 0 has no field 'output'"),
    ('[{"instruction": "x", "input": "", "output": "o"}, 5]', "record 1 is a int"),
    ('[{"instruction": "x", "input": 3, "output": "o"}]', "field 'input' must be a string"),
    ('[{"instruction": " ", "input": "", "output": "o"}]', "record 0 has an empty instruction"),
])
def test_load_records_rejects_bad_files(tmp_path, content, message):
    path = tmp_path / "train.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(GoracsError, match=message):
        load_records(path)


def test_read_task_needs_a_known_task(tmp_path):
    with pytest.raises(GoracsError, match="meta.json"):
        read_task(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"task": "ranking"}))
    with pytest.raises(GoracsError, match="task must be one of seqrec, ctr, got 'ranking'"):
        read_task(tmp_path)


def test_records_come_from_json_lines_and_parquet_alike(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    recs = [{"instruction": "i", "input": "x", "output": "Yes"},
            {"instruction": "j", "input": "", "output": "No", "negatives": ["a", "b"]}]
    (tmp_path / "r.json").write_text(json.dumps(recs))
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    table = pa.table({k: [r.get(k) for r in recs]
                      for k in ("instruction", "input", "output", "negatives")})
    pq.write_table(table, tmp_path / "r.parquet")
    from_json = load_records(tmp_path / "r.json")
    assert load_records(tmp_path / "r.jsonl") == from_json
    from_parquet = load_records(tmp_path / "r.parquet")
    # Parquet gives every row every column: an absent list is a null
    assert from_parquet[1] == from_json[1] and from_parquet[0]["negatives"] is None
    assert {k: v for k, v in from_parquet[0].items() if k != "negatives"} == from_json[0]


def test_a_bad_parquet_file_is_one_line(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(GoracsError, match="not a readable Parquet file"):
        load_records(tmp_path / "bad.parquet")
    pq.write_table(pa.Table.from_pylist([{"instruction": "i", "input": None, "output": "o"}]),
                   tmp_path / "null.parquet")
    with pytest.raises(GoracsError, match="field 'input' must be a string, got NoneType"):
        load_records(tmp_path / "null.parquet")
    with pytest.raises(GoracsError, match="file not found"):
        load_records(tmp_path / "absent.parquet")
