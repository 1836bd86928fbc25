"""One record per sweep trial, kept as JSONL (local or s3://), so the report can be rebuilt from a
finished (or resumed) sweep without Ray and checked line by line when a file is damaged.

NaN scores (a diverged loss, a task that could not be scored) are kept as NaN: Python's json writes
and reads the `NaN` token, so a round trip never turns them into 0 or drops them.
"""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import asdict, dataclass, fields
from typing import Any

from finadapt import storage
from finadapt.errors import InputError

STATUSES = ("completed", "stopped_early", "error")


@dataclass
class TrialRecord:
    """What one trial did: its sampled params (dotted key -> value), every report it made
    (`step`, maybe `loss`, `val_score`, `val_<task>`), how it ended, and where its outputs are."""

    trial_id: str
    params: dict[str, Any]
    history: list[dict]
    status: str
    steps_run: int
    planned_steps: int
    wall_seconds: float
    final_scores: dict[str, float]
    run_dir: str
    model_dir: str | None
    error: str | None = None


_FIELDS = {f.name for f in fields(TrialRecord)}
_REQUIRED = {f.name for f in fields(TrialRecord) if f.name != "error"}


def _is_number(value: Any) -> bool:
    """Python or numpy reals (Tune hands back numpy scalars); bools are not scores."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _json_default(value: Any) -> Any:
    """numpy scalars/arrays become plain numbers/lists; anything else is refused, never stringified."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} value {value!r} is not JSON serializable")


def _check(data: dict, where: str) -> TrialRecord:
    """Build a TrialRecord from a decoded dict, or raise InputError naming `where` and the field."""
    missing = sorted(_REQUIRED - data.keys())
    if missing:
        raise InputError(f"{where}: missing field(s) {', '.join(missing)}")
    unknown = sorted(data.keys() - _FIELDS)
    if unknown:
        raise InputError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(_FIELDS))}")
    problems = []
    if not isinstance(data["trial_id"], str) or not data["trial_id"]:
        problems.append("trial_id must be a non-empty string")
    if not isinstance(data["params"], dict):
        problems.append("params must be an object (dotted key -> value)")
    if not isinstance(data["history"], list) or not all(isinstance(h, dict) for h in data["history"]):
        problems.append("history must be a list of objects")
    if data["status"] not in STATUSES:
        problems.append(f"status {data['status']!r} is not one of {', '.join(STATUSES)}")
    for key in ("steps_run", "planned_steps"):
        if not _is_int(data[key]) or data[key] < 0:
            problems.append(f"{key} must be a non-negative integer, got {data[key]!r}")
    if not _is_number(data["wall_seconds"]):
        problems.append(f"wall_seconds must be a number, got {data['wall_seconds']!r}")
    scores = data["final_scores"]
    if not isinstance(scores, dict) or not all(_is_number(v) or v is None for v in scores.values()):
        problems.append("final_scores must map names to numbers (or null for NaN)")
    if not isinstance(data["run_dir"], str):
        problems.append("run_dir must be a string")
    for key in ("model_dir", "error"):
        if data.get(key) is not None and not isinstance(data[key], str):
            problems.append(f"{key} must be a string or null")
    if problems:
        raise InputError(f"{where}: {'; '.join(problems)}")
    record = TrialRecord(**data)
    record.final_scores = {k: math.nan if v is None else float(v) for k, v in scores.items()}
    record.wall_seconds = float(record.wall_seconds)
    record.steps_run, record.planned_steps = int(record.steps_run), int(record.planned_steps)
    return record


def record_to_json(record: TrialRecord) -> str:
    """One JSONL line (NaN kept as the `NaN` token)."""
    return json.dumps(asdict(record), allow_nan=True, default=_json_default)


def save_records(records: list[TrialRecord], path: str) -> None:
    """Write all records as JSONL to `path` (local: atomic temp + rename; S3: one put)."""
    seen: set[str] = set()
    lines = []
    for i, record in enumerate(records):
        where = f"{path}: record {i} ({getattr(record, 'trial_id', '?')})"
        checked = _check(asdict(record), where)
        if checked.trial_id in seen:
            raise InputError(f"{where}: trial_id {checked.trial_id!r} appears twice")
        seen.add(checked.trial_id)
        try:
            lines.append(record_to_json(checked))
        except (TypeError, ValueError) as err:
            raise InputError(f"{where}: {err}") from err
    storage.write_text(path, "".join(line + "\n" for line in lines))


def load_records(path: str) -> list[TrialRecord]:
    """Read records written by save_records; a bad line raises InputError naming `path: line N`."""
    records: list[TrialRecord] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(storage.read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from err
        if not isinstance(data, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(data).__name__}")
        record = _check(data, where)
        if record.trial_id in seen:
            raise InputError(f"{where}: trial_id {record.trial_id!r} already on line {seen[record.trial_id]}")
        seen[record.trial_id] = number
        records.append(record)
    return records
