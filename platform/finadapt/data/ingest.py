"""Read raw corpora (local or s3://; JSONL(.gz), parquet, folders of .txt) into the row contract.

Files are parsed inside Ray tasks, one file per call, streaming line by line (or parquet batch by
batch), so no corpus passes through the driver. A record that cannot become a document (bad JSON,
no text, non-string or empty text, undecodable bytes, unusable id) is never silently dropped: it
goes to ``<quarantine_dir>/<source>.jsonl`` with its file, line and reason, and is counted.

Files are never dropped silently either. Names starting with ``_`` or ``.`` inside an input folder
(Spark's ``_SUCCESS``, ``.crc`` files, editor backups) are skipped unless the input sets
``read_hidden: true``, and every skipped file is logged and listed (``IngestResult.skipped``, the
summary, the corpus manifest and report) with its reason. A file that cannot be read to its end
(truncated or corrupt gzip, unreadable parquet) is handled per input with ``on_corrupt_file``:
``quarantine`` (default) drops the WHOLE file, records read before the error included (a file is used
whole or not at all, so a source is never silently partial), and writes one ``corrupt_file`` entry
naming it; ``fail`` stops the run with one line naming the file. Quarantine files are written under a
temporary name and renamed when the scan has finished, so an existing ``<source>.jsonl`` (empty =
"checked, clean") always belongs to a completed scan.

Cost of that guarantee: ``read_inputs`` first runs one streaming scan that keeps only the bad
records (they come to the driver to be written; good rows are discarded in the workers), then
returns a lazy dataset that parses the files again and keeps the good rows. Two reads, but no
materialized corpus anywhere. Workers open S3 files with finadapt.storage, so they need the same
S3 environment as the driver (true for a local ``ray.init()`` started after it is set; on a
cluster pass it in the job's runtime_env).
"""
from __future__ import annotations

import collections
import concurrent.futures
import json
import logging
import os
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray.data
from pydantic import BaseModel, ConfigDict, Field
from ray.data.expressions import col

from finadapt import storage
from finadapt.errors import InputError
from finadapt.storage import StorageError

log = logging.getLogger(__name__)
RAW_MAX_CHARS = 2000
ROWS_PER_OUTPUT = 1000  # rows per yielded block: bounds worker memory while streaming a file
SUMMARY_FILE = "_summary.json"
QUARANTINE_REASONS: tuple[str, ...] = (
    "invalid_utf8", "bad_json", "not_an_object", "missing_text", "non_string_text", "empty_text", "bad_id",
    "corrupt_file",
)
# What a file (not a record) can fail with while being read: truncated/corrupt gzip (EOFError,
# zlib.error, BadGzipFile), I/O and Arrow errors.
_FILE_ERRORS = (OSError, EOFError, zlib.error, pa.ArrowException)
_SUFFIXES = {
    "jsonl": (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz", ".json", ".json.gz"),
    "parquet": (".parquet",),
    "text": (".txt", ".txt.gz"),
}
DOC_COLUMNS = ["id", "text", "source", "domain", "bytes"]
QUARANTINE_COLUMNS = ["source", "file", "line", "reason", "raw"]
# Good rows and quarantine records share one schema so one parse feeds both outputs.
_SCHEMA = pa.schema([
    ("id", pa.string()), ("text", pa.string()), ("source", pa.string()), ("domain", pa.string()),
    ("bytes", pa.int64()), ("file", pa.string()), ("line", pa.int64()), ("reason", pa.string()),
    ("raw", pa.string()),
])


class InputSpec(BaseModel):
    """One input: a file or folder, local or ``s3://``, and how to read it."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="local path or s3:// URI of a file or a folder (read recursively)")
    source: str = Field(
        pattern=r"^[A-Za-z0-9_.]+$",
        description="source name, unique across inputs; prefixes ids, so no '-' (keeps ids unique across sources)",
    )
    domain: Literal["financial", "general"] = Field(description="domain label carried by every row")
    format: Literal["auto", "jsonl", "parquet", "text"] = Field(
        "auto", description="auto: by extension (.jsonl/.json/.ndjson[.gz], .parquet, .txt[.gz]); "
        "text: one document per file, id = relative path",
    )
    text_field: str = Field("text", description="field/column holding the document text (jsonl, parquet)")
    id_field: str = Field("id", description="field/column holding the id; missing ids become <source>-<file>-<line>")
    read_hidden: bool = Field(
        False, description="also read files whose name (or a folder of whose path) starts with '_' or '.'; "
        "by default they are skipped and listed in the manifest/report with the reason")
    on_corrupt_file: Literal["quarantine", "fail"] = Field(
        "quarantine", description="a file that cannot be read to its end (truncated gzip, corrupt parquet): "
        "quarantine = drop the whole file (records before the error too) and record it as 'corrupt_file'; "
        "fail = stop the run with one line naming the file")
    max_records: int | None = Field(
        None, ge=1, description="read only the first N lines/rows of each jsonl or parquet file of this input "
        "(a demo-sized corpus from the real files; None: all)")


@dataclass
class IngestResult:
    """The lazy document dataset plus what was quarantined (counts per source and reason)."""

    dataset: ray.data.Dataset
    quarantined: dict[str, dict[str, int]]
    quarantine_files: dict[str, str]
    files: dict[str, int] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)  # {source, file, reason}
    corrupt_files: list[dict[str, Any]] = field(default_factory=list)  # {source, file, lines_read, error}

    @property
    def quarantined_total(self) -> int:
        return sum(sum(r.values()) for r in self.quarantined.values())


# ---------------------------------------------------------------- planning (driver, before Ray)

def _format_of(uri: str, fmt: str) -> str | None:
    if fmt != "auto":
        return fmt
    low = uri.lower()
    for name, suffixes in _SUFFIXES.items():
        if low.endswith(suffixes):
            return name
    return None


def _hidden(rel: str) -> str | None:
    """Why a file at relative path ``rel`` counts as hidden (a '_'/'.' name on its path), or None."""
    parts = rel.split("/")
    for i, part in enumerate(parts):
        if part.startswith((".", "_")):
            what = "name" if i == len(parts) - 1 else "folder"
            return (f"{what} {part!r} starts with {part[0]!r} (marker/hidden file); "
                    "set read_hidden: true on the input to read it")
    return None


def _probe(task: dict[str, Any]) -> None:
    """Open the file (and gunzip its first bytes / read the parquet footer) so that a missing or
    unreadable input fails here, naming the path, before any pipeline starts. Bad content (not gzip,
    no parquet footer) fails here only with ``on_corrupt_file: fail``; else the scan quarantines it."""
    uri, text_field = task["file_uri"], task["text_field"]
    defer = task["on_corrupt"] == "quarantine"
    if task["format"] == "parquet":
        try:
            fs, path = storage.filesystem_for(uri)
            f = fs.open_input_file(path)
        except OSError as exc:
            raise StorageError(f"{uri}: unreadable ({exc})") from exc
        try:
            with f:
                schema = pq.ParquetFile(f).schema_arrow
        except _FILE_ERRORS as exc:
            if defer:
                return
            raise StorageError(f"{uri}: unreadable parquet file ({exc}); set on_corrupt_file: quarantine "
                               f"on input {task['source']!r} to skip it") from exc
        if text_field not in schema.names:
            raise InputError(f"{uri}: no column {text_field!r} (columns: {schema.names}); set text_field")
        if not pa.types.is_string(schema.field(text_field).type) and not pa.types.is_large_string(
                schema.field(text_field).type):
            raise InputError(f"{uri}: column {text_field!r} is {schema.field(text_field).type}, not a string column")
        return
    f = storage.open_input(uri)  # StorageError naming the file when missing or not readable
    try:
        with f:
            f.read(1)
    except _FILE_ERRORS as exc:
        if defer:
            return
        raise StorageError(f"{uri}: unreadable ({exc}); set on_corrupt_file: quarantine "
                           f"on input {task['source']!r} to skip it") from exc


def plan_inputs(specs: Sequence[InputSpec], skipped: list[dict[str, str]] | None = None) -> list[dict[str, Any]]:
    """One task per input file (URI, relative name, format, spec fields); raises on any input
    that is missing, empty, unreadable or of unknown format, naming it. Hidden files not read
    are appended to ``skipped`` as {source, file, reason} and logged."""
    skipped = [] if skipped is None else skipped
    names = [s.source for s in specs]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise InputError(f"source names must be unique across inputs: {dupes}")
    tasks: list[dict[str, Any]] = []
    for spec in specs:
        files = storage.list_files(spec.path)  # StorageError naming the path if it is missing
        root = spec.path.rstrip("/")
        spec_tasks = []
        for uri in files:
            rel = os.path.basename(uri) if uri == spec.path else uri[len(root):].lstrip("/").replace(os.sep, "/")
            why = _hidden(rel) if uri != spec.path and not spec.read_hidden else None
            if why:  # _SUCCESS, .crc and similar markers: skipped, but listed
                skipped.append({"source": spec.source, "file": rel, "reason": why})
                continue
            fmt = _format_of(uri, spec.format)
            if fmt is None:
                raise InputError(
                    f"{uri}: cannot tell the format from the extension; set format= on input {spec.source!r}")
            spec_tasks.append({  # absolute local paths: workers' cwd differs from the driver's
                "file_uri": uri if storage.is_s3(uri) else os.path.abspath(uri), "rel": rel,
                "format": fmt, "source": spec.source, "domain": spec.domain,
                "text_field": spec.text_field, "id_field": spec.id_field, "on_corrupt": spec.on_corrupt_file,
                "exclude": False, "max_records": spec.max_records or 0,
            })
        mine = [s["file"] for s in skipped if s["source"] == spec.source]
        if mine:
            log.warning("input %s (%s): skipped %d file(s) whose name or folder starts with '_' or '.': %s%s "
                        "(set read_hidden: true to read them; all are listed in the manifest)", spec.source,
                        spec.path, len(mine), ", ".join(mine[:10]), ", ..." if len(mine) > 10 else "")
        if not spec_tasks:
            raise StorageError(f"{spec.path}: no input files found" + (
                f" ({len(mine)} skipped as hidden: {', '.join(mine[:5])}; set read_hidden: true)" if mine else ""))
        tasks.extend(spec_tasks)
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(_probe, tasks))
    return tasks


# ---------------------------------------------------------------- parsing (inside Ray tasks)

class _Rows:
    """Accumulates output rows for one file and flushes them as Arrow tables."""

    def __init__(self, task: dict[str, Any]):
        self.task = task
        self.cols: dict[str, list] = {name: [] for name in _SCHEMA.names}

    def __len__(self) -> int:
        return len(self.cols["id"])

    def doc(self, line: int, doc_id: str, text: str) -> None:
        self._add(doc_id, text, len(text.encode("utf-8")), "", line, "", "")

    def bad(self, line: int, reason: str, raw: str) -> None:
        self._add("", "", 0, self.task["rel"], line, reason, raw[:RAW_MAX_CHARS])

    def _add(self, doc_id, text, nbytes, file, line, reason, raw) -> None:
        for name, value in zip(_SCHEMA.names, (doc_id, text, self.task["source"], self.task["domain"],
                                               nbytes, file, line, reason, raw)):
            self.cols[name].append(value)

    def flush(self) -> pa.Table:
        table = pa.table(self.cols, schema=_SCHEMA)
        self.cols = {name: [] for name in _SCHEMA.names}
        return table


def _doc_id(task: dict[str, Any], raw_id: Any, line: int) -> str | None:
    """The row id, unique across sources: ``<source>-`` prefix unless already there; None if unusable."""
    source = task["source"]
    if raw_id is None or raw_id == "":
        return f"{source}-{task['rel']}-{line}"
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        return None
    raw_id = str(raw_id)
    return raw_id if raw_id.startswith(f"{source}-") else f"{source}-{raw_id}"


def _record(rows: _Rows, line: int, obj: Any, raw: str) -> None:
    """Validate one parsed record; add it as a doc or a quarantine entry."""
    task = rows.task
    if not isinstance(obj, dict):
        return rows.bad(line, "not_an_object", raw)
    text = obj.get(task["text_field"])
    if text is None:
        return rows.bad(line, "missing_text", raw)
    if not isinstance(text, str):
        return rows.bad(line, "non_string_text", raw)
    if not text.strip():
        return rows.bad(line, "empty_text", raw)
    doc_id = _doc_id(task, obj.get(task["id_field"]), line)
    if doc_id is None:
        return rows.bad(line, "bad_id", raw)
    rows.doc(line, doc_id, text)


def _file_error(rows: _Rows, line: int, exc: BaseException) -> Iterator[pa.Table]:
    """A file that broke off after ``line`` records. Scan pass: one ``corrupt_file`` row (the caller
    drops the whole file). Document pass (``strict``): it read fine in the scan, so raise."""
    uri = rows.task["file_uri"]
    message = (f"{uri}: read failed after line {line} ({type(exc).__name__}: {exc}); "
               f"the whole file is quarantined, none kept")
    if rows.task.get("strict"):
        raise StorageError(message) from exc
    rows.bad(line, "corrupt_file", message)
    yield rows.flush()


def _read_jsonl(rows: _Rows) -> Iterator[pa.Table]:
    uri = rows.task["file_uri"]
    limit = rows.task.get("max_records") or 0
    line = 0
    try:
        with storage.open_input(uri) as f:
            for line, raw_bytes in enumerate(f, start=1):
                if limit and line > limit:
                    break
                if not raw_bytes.strip():
                    continue  # blank lines separate nothing and hold no record
                try:
                    raw = raw_bytes.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError:
                    rows.bad(line, "invalid_utf8", raw_bytes.decode("utf-8", "replace").rstrip("\r\n"))
                    continue
                try:
                    obj = json.loads(raw)
                except ValueError:
                    rows.bad(line, "bad_json", raw)
                    continue
                _record(rows, line, obj, raw)
                if len(rows) >= ROWS_PER_OUTPUT:
                    yield rows.flush()
    except _FILE_ERRORS as exc:  # truncated gzip, lost connection: a file problem, not a record's
        yield from _file_error(rows, line, exc)
        return
    yield rows.flush()


def _read_parquet(rows: _Rows) -> Iterator[pa.Table]:
    task = rows.task
    uri = task["file_uri"]
    line = 0
    try:
        fs, path = storage.filesystem_for(uri)
        with fs.open_input_file(path) as f:
            pf = pq.ParquetFile(f)
            columns = [c for c in dict.fromkeys([task["text_field"], task["id_field"]]) if c in pf.schema_arrow.names]
            for batch in pf.iter_batches(batch_size=ROWS_PER_OUTPUT, columns=columns):
                limit = task.get("max_records") or 0
                for record in batch.to_pylist()[:max(0, limit - line) if limit else None]:
                    line += 1
                    _record(rows, line, record, json.dumps(record, ensure_ascii=False, default=str))
                yield rows.flush()
                if limit and line >= limit:
                    return
    except _FILE_ERRORS as exc:
        yield from _file_error(rows, line, exc)


def _read_text(rows: _Rows) -> Iterator[pa.Table]:
    """One document per file; line 0 stands for "the whole file"."""
    task = rows.task
    try:
        with storage.open_input(task["file_uri"]) as f:
            data = f.read()
    except _FILE_ERRORS as exc:
        yield from _file_error(rows, 0, exc)
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        rows.bad(0, "invalid_utf8", data[:RAW_MAX_CHARS * 4].decode("utf-8", "replace"))
    else:
        if text.strip():
            rows.doc(0, f"{task['source']}-{task['rel']}", text)
        else:
            rows.bad(0, "empty_text", text)
    yield rows.flush()


_READERS = {"jsonl": _read_jsonl, "parquet": _read_parquet, "text": _read_text}


def parse_files(batch: dict[str, np.ndarray], strict: bool = False) -> Iterator[pa.Table]:
    """Ray Data UDF: file tasks in, docs and quarantine records (``reason`` != "") out, streamed.
    ``strict``: a file error raises (document pass) instead of becoming a ``corrupt_file`` row (scan);
    tasks marked ``exclude`` (files quarantined by the scan) yield nothing."""
    for i in range(len(batch["file_uri"])):
        task = {k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in batch.items()}
        if task.get("exclude"):
            continue
        task["strict"] = strict
        yield from _READERS[task["format"]](_Rows(task))


def parsed_dataset(tasks: list[dict[str, Any]], strict: bool = False) -> ray.data.Dataset:
    """Lazy dataset of every parsed record (docs and quarantine records together)."""
    return ray.data.from_items(tasks, override_num_blocks=min(len(tasks), 1000)).map_batches(
        parse_files, fn_kwargs={"strict": strict}, batch_size=1, batch_format="numpy")


# ---------------------------------------------------------------- quarantine + public entry points

def _write_quarantine(bad: ray.data.Dataset, sources: list[str], quarantine_dir: str,
                      fail_on_corrupt: frozenset[str] = frozenset(),
                      ) -> tuple[dict[str, dict[str, int]], dict[str, str], list[dict[str, Any]]]:
    """Stream the bad records to one JSONL per source (an empty file when none: checked, clean).

    Atomic: records go to temporary files that are renamed only once the whole scan is done; on any
    error they are deleted, so no partial or empty file claims a check that did not finish. A
    ``corrupt_file`` record of a source in ``fail_on_corrupt`` stops the scan with one line naming it.
    Returns (counts per source and reason, quarantine file per source, corrupt files).
    """
    counts: dict[str, collections.Counter] = {s: collections.Counter() for s in sources}
    paths = {s: storage.join(quarantine_dir, f"{s}.jsonl") for s in sources}
    tag = uuid.uuid4().hex[:8]
    temps = {s: storage.join(quarantine_dir, f".{s}.jsonl.tmp-{tag}") for s in sources}
    corrupt: list[dict[str, Any]] = []
    streams = {}
    done = False
    try:
        for s, uri in temps.items():
            fs, path = storage.filesystem_for(uri)
            if not storage.is_s3(uri):
                os.makedirs(os.path.dirname(path), exist_ok=True)
            streams[s] = fs.open_output_stream(path, compression=None)
        for batch in bad.iter_batches(batch_format="pyarrow", batch_size=1000):
            for rec in batch.select(QUARANTINE_COLUMNS).to_pylist():
                if rec["reason"] == "corrupt_file":
                    if rec["source"] in fail_on_corrupt:
                        raise StorageError(rec["raw"].replace("the whole file is quarantined, none kept",
                                                              "corrupt input file")
                                           + f"; set on_corrupt_file: quarantine on input {rec['source']!r} "
                                             "to quarantine it and go on")
                    corrupt.append({"source": rec["source"], "file": rec["file"], "lines_read": rec["line"],
                                    "error": rec["raw"]})
                counts[rec["source"]][rec["reason"]] += 1
                streams[rec["source"]].write((json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8"))
        for stream in streams.values():
            stream.close()
        for s in sources:
            fs, path = storage.filesystem_for(temps[s])
            fs.move(path, storage.filesystem_for(paths[s])[1])
        done = True
    except OSError as exc:
        raise StorageError(f"{quarantine_dir}: cannot write quarantine ({exc})") from exc
    finally:
        if not done:
            _discard(streams, temps, quarantine_dir)
    return {s: dict(sorted(c.items())) for s, c in counts.items()}, paths, corrupt


def _discard(streams: dict, temps: dict[str, str], quarantine_dir: str) -> None:
    """Close and delete the temporary quarantine files of a scan that did not finish (best effort)."""
    for stream in streams.values():
        try:
            stream.close()
        except OSError:
            pass
    for uri in temps.values():
        fs, path = storage.filesystem_for(uri)
        try:
            fs.delete_file(path)
        except OSError:
            pass  # never created
    if not storage.is_s3(quarantine_dir):
        try:
            os.rmdir(storage.filesystem_for(quarantine_dir)[1])  # only if this scan created it empty
        except OSError:
            pass


def ingest(specs: Sequence[InputSpec], quarantine_dir: str) -> IngestResult:
    """Validate inputs, quarantine bad records (one streaming scan), return the lazy doc dataset."""
    specs = [s if isinstance(s, InputSpec) else InputSpec.model_validate(s) for s in specs]
    skipped: list[dict[str, str]] = []
    tasks = plan_inputs(specs, skipped)
    sources = [s.source for s in specs]
    fail = frozenset(s.source for s in specs if s.on_corrupt_file == "fail")
    quarantined, paths, corrupt = _write_quarantine(
        parsed_dataset(tasks).filter(expr=col("reason") != ""), sources, quarantine_dir, fail)
    broken = {(c["source"], c["file"]) for c in corrupt}
    for t in tasks:
        t["exclude"] = (t["source"], t["rel"]) in broken
    for c in corrupt:
        log.warning("quarantined corrupt input file: %s", c["error"])
    files = dict(collections.Counter(t["source"] for t in tasks))
    summary = {"quarantined": quarantined, "files": files, "reasons": list(QUARANTINE_REASONS),
               "skipped": skipped, "corrupt_files": corrupt}
    storage.write_text(storage.join(quarantine_dir, SUMMARY_FILE), json.dumps(summary, indent=2) + "\n")
    docs = parsed_dataset(tasks, strict=True).filter(expr=col("reason") == "").select_columns(DOC_COLUMNS)
    return IngestResult(dataset=docs, quarantined=quarantined, quarantine_files=paths, files=files,
                        skipped=skipped, corrupt_files=corrupt)


def read_inputs(specs: Sequence[InputSpec], quarantine_dir: str) -> ray.data.Dataset:
    """Dataset of ``id, text, source, domain, bytes`` from ``specs``; counts in ``<quarantine_dir>/_summary.json``."""
    return ingest(specs, quarantine_dir).dataset


def quarantine_summary(quarantine_dir: str) -> dict[str, Any]:
    """The counts written by the last ``ingest`` into ``quarantine_dir``."""
    return json.loads(storage.read_text(storage.join(quarantine_dir, SUMMARY_FILE)))
