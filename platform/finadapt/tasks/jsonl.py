"""Line-numbered JSONL reading (plain or gzip) with errors that say where the data is broken."""
from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from finadapt.errors import FinadaptError, InputNotFoundError


class DataFormatError(FinadaptError, ValueError):
    """A data file is malformed; the message names the file and the 1-based line number."""

    label = "data error"


def _missing_file(path: Path) -> FileNotFoundError:
    return InputNotFoundError(
        f"Data file not found: {path}. Set FINADAPT_DATA_DIR to the folder that holds "
        f"fpb/, fiqa_sa/, headlines/ and finner/ (default: ../shared/data from the project root)."
    )


def iter_json_lines(lines: Iterable[str], name: str) -> Iterator[tuple[int, dict]]:
    """Parse an iterable of text lines as JSONL: yields (1-based line number, object).

    Blank lines are skipped; a line that is not valid JSON, or not a JSON object, raises
    DataFormatError naming `name` and the line number.
    """
    lineno = 0
    try:
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(f"{name}: line {lineno}: invalid JSON: {exc}") from exc
            if not isinstance(obj, dict):
                raise DataFormatError(
                    f"{name}: line {lineno}: expected a JSON object, got {type(obj).__name__}"
                )
            yield lineno, obj
    except (EOFError, gzip.BadGzipFile, zlib.error, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{name}: after line {lineno}: unreadable data: {exc}") from exc


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield (1-based line number, record) for every record of a .jsonl or .jsonl.gz file."""
    path = Path(path)
    if not path.is_file():
        raise _missing_file(path)

    def _gen() -> Iterator[tuple[int, dict]]:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as fh:
            yield from iter_json_lines(fh, str(path))

    return _gen()


def read_records(path: str | os.PathLike) -> list[dict]:
    """All records of a JSONL file, in order."""
    return [rec for _, rec in read_jsonl(path)]


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write rows as UTF-8 JSONL (deterministic: keys kept in insertion order); returns the count."""
    n = 0
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n
