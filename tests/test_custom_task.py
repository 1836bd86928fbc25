"""User-defined classification tasks from a YAML spec (local files and S3 via finadapt.storage)."""
from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest

from finadapt.tasks import DataFormatError, get_task, load_samples, register_task, unregister_task
from finadapt.tasks.custom import CustomTaskSpec, TaskSpecError, custom_samples, load_task_spec

PROMPT = "Classify the sentiment of this bank news: positive, neutral or negative.\nText: {text}\nAnswer:"
ROWS = [
    {"sentence": "Bank profits rose sharply.", "label": "positive", "part": "train"},
    {"sentence": "The bank kept its dividend.", "label": "neutral", "part": "test"},
    {"sentence": "Loan losses doubled {again}.", "label": "Negative", "part": "test"},
    {"sentence": "Deposits were flat.", "label": "neutral", "part": "validation"},
]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _spec(tmp_path: Path, name: str = "my_bank_sentiment", **fields) -> Path:
    spec = {
        "name": name,
        "data": "sentiment.jsonl",
        "text_field": "sentence",
        "label_field": "label",
        "labels": ["positive", "neutral", "negative"],
        "prompt": PROMPT,
        "metric": "f1_weighted",
        "split_field": None,
        "license": "internal",
    }
    spec.update(fields)
    spec = {k: v for k, v in spec.items() if v is not ...}
    import yaml

    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def test_good_spec_loads_and_renders(tmp_path):
    _write_jsonl(tmp_path / "sentiment.jsonl", ROWS)
    spec = load_task_spec(_spec(tmp_path))
    assert spec.data == str((tmp_path / "sentiment.jsonl").resolve())  # relative to the YAML file
    rows = custom_samples(spec)  # no split_field: every row is "test"
    assert [s.id for s in rows] == [f"my_bank_sentiment-test-{i:05d}" for i in range(4)]
    s = rows[2]
    assert s.query == ("Classify the sentiment of this bank news: positive, neutral or negative.\n"
                       "Text: Loan losses doubled {again}.\nAnswer:")
    assert (s.answer, s.gold, s.choices) == ("negative", 2, ["positive", "neutral", "negative"])
    assert s.task == "my_bank_sentiment" and not s.flare_exact
    assert custom_samples(spec, "train") == []
    assert len(custom_samples(spec, limit=2)) == 2


def test_register_task_serves_get_task_and_load_samples(tmp_path):
    _write_jsonl(tmp_path / "sentiment.jsonl.gz", ROWS)
    path = _spec(tmp_path, name="bank_sa_reg", data="sentiment.jsonl.gz", split_field="part", metric="f1_macro")
    try:
        definition = register_task(path)
        task = get_task("bank_sa_reg")
        assert task is definition and task.kind == "classification" and not task.builtin
        assert task.choices == ("positive", "neutral", "negative") and task.metric == "f1_macro"
        assert task.license == "internal"
        assert [s.text for s in load_samples("bank_sa_reg", "test")] == [r["sentence"] for r in ROWS[1:3]]
        assert [s.answer for s in load_samples("bank_sa_reg", "valid")] == ["neutral"]
        assert [s.id for s in load_samples("bank_sa_reg", "train")] == ["bank_sa_reg-train-00000"]
    finally:
        unregister_task("bank_sa_reg")
    with pytest.raises(KeyError):
        get_task("bank_sa_reg")


def test_builtin_name_cannot_be_shadowed(tmp_path):
    _write_jsonl(tmp_path / "sentiment.jsonl", ROWS)
    with pytest.raises(ValueError, match="built-in"):
        register_task(load_task_spec(_spec(tmp_path, name="fpb")))


def test_csv_data(tmp_path):
    with open(tmp_path / "sentiment.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["sentence", "label", "part"])
        w.writeheader()
        w.writerows(ROWS)
    rows = custom_samples(load_task_spec(_spec(tmp_path, data="sentiment.csv")))
    assert [s.answer for s in rows] == ["positive", "neutral", "negative", "neutral"]


@pytest.mark.parametrize(
    ("fields", "field", "why"),
    [
        ({"metric": "bogus"}, "metric", "accuracy"),
        ({"labels": ...}, "labels", "required field is missing"),
        ({"prompt": "Classify: positive or negative."}, "prompt", "{text}"),
        ({"labels": ["yes", True]}, "labels", "quote it"),
        ({"labels": ["a", "a"]}, "labels", "unique"),
        ({"data": "sentiment.parquet"}, "data", ".jsonl"),
        ({"colour": "blue"}, "colour", "Extra inputs"),
    ],
)
def test_bad_spec_names_field_and_file(tmp_path, fields, field, why):
    path = _spec(tmp_path, **fields)
    with pytest.raises(TaskSpecError) as info:
        load_task_spec(path)
    msg = str(info.value)
    assert str(path) in msg and f"field '{field}'" in msg and why in msg, msg


def test_spec_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(TaskSpecError, match=r"list\.yaml.*mapping"):
        load_task_spec(path)


def test_unknown_label_names_file_and_line(tmp_path):
    data = _write_jsonl(tmp_path / "sentiment.jsonl",
                        [ROWS[0], ROWS[1], {"sentence": "Rates moved.", "label": "bullish"}])
    spec = load_task_spec(_spec(tmp_path))
    with pytest.raises(DataFormatError) as info:
        custom_samples(spec)
    msg = str(info.value)
    assert str(data.resolve()) in msg and "line 3" in msg and "'bullish'" in msg


def test_missing_text_field_names_line(tmp_path):
    _write_jsonl(tmp_path / "sentiment.jsonl", [ROWS[0], {"text": "wrong field", "label": "neutral"}])
    with pytest.raises(DataFormatError, match=r"line 2: missing or empty text field 'sentence'"):
        custom_samples(load_task_spec(_spec(tmp_path)))


def test_spec_model_forbids_extra_fields():
    with pytest.raises(ValueError):
        CustomTaskSpec(name="x", data="a.jsonl", labels=["a", "b"], prompt="{text}", unknown=1)


def test_s3_hosted_data(tmp_path, s3_bucket, s3_server):
    bucket = s3_bucket[len("s3://"):]
    body = gzip.compress("".join(json.dumps(r) + "\n" for r in ROWS).encode())
    s3_server.client().put_object(Bucket=bucket, Key="tasks/sentiment.jsonl.gz", Body=body)
    spec = load_task_spec(_spec(tmp_path, name="bank_sa_s3", data=f"{s3_bucket}/tasks/sentiment.jsonl.gz",
                                split_field="part"))
    assert spec.data == f"{s3_bucket}/tasks/sentiment.jsonl.gz"
    rows = custom_samples(spec, "test")
    assert [s.answer for s in rows] == ["neutral", "negative"]
    assert rows[0].query == PROMPT.replace("{text}", "The bank kept its dividend.")


def test_missing_data_file_names_it(tmp_path):
    spec = load_task_spec(_spec(tmp_path, data="nowhere.jsonl"))
    with pytest.raises(Exception, match=r"nowhere\.jsonl"):
        custom_samples(spec)
