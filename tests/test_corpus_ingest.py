"""Corpus ingest: every input format, local and S3, quarantine of bad records, clear input errors."""
from __future__ import annotations

import gzip
import io
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from finadapt import storage
from finadapt.data.ingest import InputSpec, ingest, quarantine_summary, read_inputs
from finadapt.storage import StorageError

GOOD = [
    {"id": "n1", "text": "Shares of Acme rose 5 pct on strong results.", "meta": {"k": 1}},
    {"id": 7, "text": "Bond yields fell sharply."},
    {"text": "A record without an id."},
]


@pytest.fixture(scope="module")
def ray_local(s3_server):
    """Ray started after the S3 env is set, so workers can read s3:// too."""
    ray.init(num_cpus=2, address="local", include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _jsonl(records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def _rows(ds) -> dict[str, dict]:
    return {r["id"]: r for r in ds.take_all()}


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def test_jsonl_gz_parquet_and_text_folder(ray_local, tmp_path):
    (tmp_path / "plain.jsonl").write_text(_jsonl(GOOD))
    with gzip.open(tmp_path / "packed.jsonl.gz", "wt") as f:
        f.write(_jsonl([{"doc_id": "z1", "body": "Gzipped news text."}]))
    pq.write_table(pa.table({"id": ["p1", None], "text": ["Parquet doc one.", "Parquet doc two."]}),
                   tmp_path / "docs.parquet")
    (tmp_path / "txt" / "sub").mkdir(parents=True)
    (tmp_path / "txt" / "a.txt").write_text("First text file.\n")
    (tmp_path / "txt" / "sub" / "b.txt").write_text("Second text file, naïve café.")
    (tmp_path / "txt" / "_SUCCESS").write_text("")  # marker files are skipped

    specs = [
        InputSpec(path=str(tmp_path / "plain.jsonl"), source="news", domain="financial"),
        InputSpec(path=str(tmp_path / "packed.jsonl.gz"), source="gz", domain="general",
                  text_field="body", id_field="doc_id"),
        InputSpec(path=str(tmp_path / "docs.parquet"), source="pq", domain="financial"),
        InputSpec(path=str(tmp_path / "txt"), source="txt", domain="general"),
    ]
    result = ingest(specs, str(tmp_path / "quarantine"))
    rows = _rows(result.dataset)
    assert sorted(rows) == sorted([
        "gz-z1", "news-n1", "news-7", "news-plain.jsonl-3", "pq-docs.parquet-2", "pq-p1", "txt-a.txt", "txt-sub/b.txt",
    ])
    assert rows["news-n1"] == {"id": "news-n1", "text": GOOD[0]["text"], "source": "news", "domain": "financial",
                               "bytes": len(GOOD[0]["text"])}
    assert rows["gz-z1"]["text"] == "Gzipped news text." and rows["gz-z1"]["domain"] == "general"
    assert rows["pq-docs.parquet-2"]["text"] == "Parquet doc two."
    b = rows["txt-sub/b.txt"]
    assert b["text"] == "Second text file, naïve café."
    assert b["bytes"] == len(b["text"].encode("utf-8")) > len(b["text"])
    assert result.quarantined_total == 0 and result.files == {"news": 1, "gz": 1, "pq": 1, "txt": 2}
    assert (tmp_path / "quarantine" / "news.jsonl").read_text() == ""  # checked and clean


def test_quarantine_bad_records_with_reasons_and_lines(ray_local, tmp_path):
    lines = [
        json.dumps({"id": "ok1", "text": "A good record."}),  # 1
        '{"id": "broken", "text": "unterminated',  # 2 bad JSON
        "",  # 3 blank line: not a record
        json.dumps({"id": "nt", "title": "no text field"}),  # 4
        json.dumps({"id": "num", "text": 42}),  # 5
        json.dumps({"id": "lst", "text": ["a", "b"]}),  # 6
        json.dumps({"id": "empty", "text": "   \n "}),  # 7
        json.dumps({"id": "ok2", "text": "Another good record."}),  # 8
        json.dumps(["not", "an", "object"]),  # 9
        json.dumps({"id": "x" * 3000, "text": None}),  # 10 long raw, truncated
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    path_bad_utf8 = tmp_path / "latin.jsonl"
    path_bad_utf8.write_bytes(b'{"text": "caf\xe9"}\n' + json.dumps({"text": "fine"}).encode() + b"\n")
    qdir = tmp_path / "q"
    result = ingest([InputSpec(path=str(path), source="src", domain="financial"),
                     InputSpec(path=str(path_bad_utf8), source="lat", domain="general")], str(qdir))

    assert sorted(_rows(result.dataset)) == ["lat-latin.jsonl-2", "src-ok1", "src-ok2"]
    assert result.quarantined["src"] == {"bad_json": 1, "empty_text": 1, "missing_text": 2,
                                         "non_string_text": 2, "not_an_object": 1}
    assert result.quarantined["lat"] == {"invalid_utf8": 1}
    records = [json.loads(x) for x in (qdir / "src.jsonl").read_text().splitlines()]
    by_line = {r["line"]: r for r in records}
    assert {k: v["reason"] for k, v in by_line.items()} == {
        2: "bad_json", 4: "missing_text", 5: "non_string_text", 6: "non_string_text", 7: "empty_text",
        9: "not_an_object", 10: "missing_text"}
    assert by_line[2] == {"source": "src", "file": "in.jsonl", "line": 2, "reason": "bad_json", "raw": lines[1]}
    assert len(by_line[10]["raw"]) == 2000 and lines[9].startswith(by_line[10]["raw"])
    assert quarantine_summary(str(qdir))["quarantined"]["src"]["non_string_text"] == 2


def test_ids_unique_across_sources(ray_local, tmp_path):
    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_text(_jsonl([{"id": "1", "text": "same id in both"}, {"text": "no id"}]))
    specs = [InputSpec(path=str(tmp_path / f"{n}.jsonl"), source=n, domain="general") for n in ("a", "b")]
    ids = [r["id"] for r in read_inputs(specs, str(tmp_path / "q")).take_all()]
    assert sorted(ids) == ["a-1", "a-a.jsonl-2", "b-1", "b-b.jsonl-2"]
    with pytest.raises(ValueError, match="unique"):
        read_inputs([specs[0], specs[0]], str(tmp_path / "q"))


def test_s3_folder_ingest_and_quarantine(ray_local, s3_bucket):
    storage.write_bytes(f"{s3_bucket}/corpus/part-0.jsonl.gz",
                        gzip.compress(_jsonl(GOOD[:2]).encode() + b"{oops\n"))
    storage.write_bytes(f"{s3_bucket}/corpus/part-1.parquet",
                        _parquet_bytes(pa.table({"id": ["s1", "s2"], "text": ["From S3 parquet.", ""]})))
    qdir = f"{s3_bucket}/quarantine"
    result = ingest([InputSpec(path=f"{s3_bucket}/corpus/", source="s3src", domain="financial")], qdir)
    rows = _rows(result.dataset)
    assert sorted(rows) == ["s3src-7", "s3src-n1", "s3src-s1"]
    assert rows["s3src-s1"]["text"] == "From S3 parquet."
    assert result.quarantined == {"s3src": {"bad_json": 1, "empty_text": 1}}
    records = [json.loads(x) for x in storage.read_text(f"{qdir}/s3src.jsonl").splitlines()]
    assert {(r["file"], r["line"], r["reason"]) for r in records} == {
        ("part-0.jsonl.gz", 3, "bad_json"), ("part-1.parquet", 2, "empty_text")}


def test_missing_input_fails_before_pipeline(ray_local, tmp_path, s3_bucket):
    qdir = tmp_path / "q"
    missing = str(tmp_path / "nope" / "corpus.jsonl.gz")
    with pytest.raises(StorageError, match="nope/corpus.jsonl.gz"):
        read_inputs([InputSpec(path=missing, source="m", domain="general")], str(qdir))
    with pytest.raises(StorageError, match=f"{s3_bucket}/absent"):
        read_inputs([InputSpec(path=f"{s3_bucket}/absent", source="m", domain="general")], str(qdir))
    assert not qdir.exists()  # nothing ran, nothing written


def test_unreadable_and_unknown_inputs_named(ray_local, tmp_path):
    bad_gz = tmp_path / "bad.jsonl.gz"
    bad_gz.write_bytes(b"this is not gzip data")
    with pytest.raises(StorageError, match="bad.jsonl.gz"):  # default: quarantined (see the truncated-gz tests)
        read_inputs([InputSpec(path=str(bad_gz), source="g", domain="general", on_corrupt_file="fail")],
                    str(tmp_path / "q"))
    odd = tmp_path / "folder"
    odd.mkdir()
    (odd / "data.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="data.csv"):
        read_inputs([InputSpec(path=str(odd), source="c", domain="general")], str(tmp_path / "q"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StorageError, match="no input files"):
        read_inputs([InputSpec(path=str(empty), source="e", domain="general")], str(tmp_path / "q"))
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "nocol.parquet")
    with pytest.raises(ValueError, match="no column 'text'"):
        read_inputs([InputSpec(path=str(tmp_path / "nocol.parquet"), source="p", domain="general")],
                    str(tmp_path / "q"))
    if os.geteuid() != 0:  # root reads anything; elsewhere a permission error must name the file
        locked = tmp_path / "locked.jsonl"
        locked.write_text(_jsonl(GOOD))
        locked.chmod(0)
        with pytest.raises(StorageError, match="locked.jsonl"):
            read_inputs([InputSpec(path=str(locked), source="l", domain="general")], str(tmp_path / "q"))


def test_input_spec_validation():
    with pytest.raises(ValueError):
        InputSpec(path="x", source="has-dash", domain="general")
    with pytest.raises(ValueError):
        InputSpec(path="x", source="ok", domain="legal")
    with pytest.raises(ValueError):
        InputSpec(path="x", source="ok", domain="general", fmt="jsonl")  # extra field


# ------------------------------------------------------------------ nothing found is dropped silently
def _hidden_tree(root):
    root.mkdir()
    (root / "a.jsonl").write_text(_jsonl([{"id": "a1", "text": "Visible document."}]))
    (root / "_x.jsonl").write_text(_jsonl([{"id": "x1", "text": "Underscore file."}]))
    (root / ".hidden").mkdir()
    (root / ".hidden" / "b.jsonl").write_text(_jsonl([{"id": "b1", "text": "Inside a dot folder."}]))
    (root / "_tmp").mkdir()
    (root / "_tmp" / "c.jsonl").write_text(_jsonl([{"id": "c1", "text": "Inside an underscore folder."}]))


def test_hidden_files_are_listed_as_skipped_with_reason(ray_local, tmp_path, caplog):
    _hidden_tree(tmp_path / "in")
    (tmp_path / "in" / "_SUCCESS").write_text("")
    qdir = tmp_path / "q"
    with caplog.at_level("WARNING", logger="finadapt.data.ingest"):
        result = ingest([InputSpec(path=str(tmp_path / "in"), source="h", domain="general")], str(qdir))
    assert sorted(_rows(result.dataset)) == ["h-a1"]
    skipped = {s["file"]: s for s in result.skipped}
    assert sorted(skipped) == [".hidden/b.jsonl", "_SUCCESS", "_tmp/c.jsonl", "_x.jsonl"]
    assert all(s["source"] == "h" and "read_hidden" in s["reason"] for s in skipped.values())
    assert "'.hidden'" in skipped[".hidden/b.jsonl"]["reason"] and "'_x.jsonl'" in skipped["_x.jsonl"]["reason"]
    assert quarantine_summary(str(qdir))["skipped"] == result.skipped  # written beside the quarantine counts
    assert any("skipped 4 file(s)" in r.getMessage() and "_x.jsonl" in r.getMessage() for r in caplog.records)


def test_read_hidden_reads_underscore_and_dot_files(ray_local, tmp_path):
    _hidden_tree(tmp_path / "in")
    result = ingest([InputSpec(path=str(tmp_path / "in"), source="h", domain="general", read_hidden=True)],
                    str(tmp_path / "q"))
    assert sorted(_rows(result.dataset)) == ["h-a1", "h-b1", "h-c1", "h-x1"]
    assert result.skipped == [] and result.files == {"h": 4}


def _truncated_gz(path, n=400) -> None:
    """A gzip of n records cut in the middle: the first records decompress, then EOF."""
    data = gzip.compress(_jsonl([{"id": f"t{i}", "text": f"Truncated file record {i}. " * 20}
                                 for i in range(n)]).encode())
    path.write_bytes(data[: len(data) // 2])


def test_truncated_gz_is_quarantined_whole_and_the_run_goes_on(ray_local, tmp_path):
    (tmp_path / "in").mkdir()
    _truncated_gz(tmp_path / "in" / "cut.jsonl.gz")
    (tmp_path / "in" / "ok.jsonl").write_text(_jsonl(GOOD[:1]))
    (tmp_path / "clean.jsonl").write_text(_jsonl(GOOD[1:2]))
    qdir = tmp_path / "q"
    result = ingest([InputSpec(path=str(tmp_path / "in"), source="c", domain="general"),
                     InputSpec(path=str(tmp_path / "clean.jsonl"), source="k", domain="general")], str(qdir))
    # records read before the corruption are not kept: a file is used whole or not at all
    assert sorted(_rows(result.dataset)) == ["c-n1", "k-7"]
    assert result.quarantined == {"c": {"corrupt_file": 1}, "k": {}}
    [record] = [json.loads(x) for x in (qdir / "c.jsonl").read_text().splitlines()]
    assert record["file"] == "cut.jsonl.gz" and record["reason"] == "corrupt_file" and record["line"] > 0
    assert "cut.jsonl.gz" in record["raw"] and "none kept" in record["raw"]
    assert result.corrupt_files == [{"source": "c", "file": "cut.jsonl.gz", "lines_read": record["line"],
                                     "error": record["raw"]}]
    assert (qdir / "k.jsonl").read_text() == ""  # checked, clean
    assert sorted(p.name for p in qdir.iterdir()) == ["_summary.json", "c.jsonl", "k.jsonl"]  # no temp files


def test_truncated_gz_fails_cleanly_when_configured(ray_local, tmp_path):
    _truncated_gz(tmp_path / "cut.jsonl.gz")
    (tmp_path / "ok.jsonl").write_text(_jsonl(GOOD))
    qdir = tmp_path / "q"
    specs = [InputSpec(path=str(tmp_path / "ok.jsonl"), source="ok", domain="general"),
             InputSpec(path=str(tmp_path / "cut.jsonl.gz"), source="c", domain="general", on_corrupt_file="fail")]
    with pytest.raises(StorageError) as info:
        ingest(specs, str(qdir))
    message = str(info.value)
    assert "cut.jsonl.gz" in message and "on_corrupt_file" in message and "\n" not in message
    # nothing claims "checked, clean": no quarantine file of this run, empty or not, and no temp file
    assert not qdir.exists() or list(qdir.iterdir()) == []
    # a file that is not gzip at all: same choice (fails naming it, or quarantined)
    (tmp_path / "bad.jsonl.gz").write_bytes(b"this is not gzip data")
    result = ingest([InputSpec(path=str(tmp_path / "bad.jsonl.gz"), source="b", domain="general")], str(qdir))
    assert result.quarantined == {"b": {"corrupt_file": 1}} and result.dataset.count() == 0


def test_quarantine_writes_are_atomic(tmp_path):
    """A scan that dies half way leaves no quarantine file (a 0-byte one would read as "checked, clean")."""
    from finadapt.data import ingest as ingest_mod

    class Dying:
        def iter_batches(self, **kwargs):
            yield pa.table({"source": ["a"], "file": ["f.jsonl"], "line": [1], "reason": ["bad_json"], "raw": ["{"]})
            raise RuntimeError("worker died")

    qdir = tmp_path / "q"
    with pytest.raises(RuntimeError, match="worker died"):
        ingest_mod._write_quarantine(Dying(), ["a", "b"], str(qdir))
    assert not qdir.exists() or list(qdir.iterdir()) == []


def test_max_records_reads_only_the_first_records_of_each_file(ray_local, tmp_path):
    """A demo-sized corpus from the real files: the first N lines/rows of each jsonl or parquet file."""
    (tmp_path / "many.jsonl").write_text(_jsonl([{"id": f"d{i}", "text": f"Doc number {i}."} for i in range(10)]))
    pq.write_table(pa.table({"id": [f"p{i}" for i in range(2500)], "text": [f"Row {i}." for i in range(2500)]}),
                   tmp_path / "many.parquet", row_group_size=700)
    specs = [InputSpec(path=str(tmp_path / "many.jsonl"), source="j", domain="financial", max_records=3),
             InputSpec(path=str(tmp_path / "many.parquet"), source="p", domain="general", max_records=1500)]
    rows = _rows(ingest(specs, str(tmp_path / "q")).dataset)
    assert sorted(r for r in rows if r.startswith("j-")) == ["j-d0", "j-d1", "j-d2"]
    assert sorted(int(r[3:]) for r in rows if r.startswith("p-")) == list(range(1500))
    unlimited = _rows(ingest([InputSpec(path=str(tmp_path / "many.jsonl"), source="j", domain="financial")],
                             str(tmp_path / "q2")).dataset)
    assert len(unlimited) == 10
