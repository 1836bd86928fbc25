"""User-defined classification tasks from a YAML spec, no code needed.

Example spec::

    name: my_bank_sentiment
    data: s3://bucket/sentiment.jsonl      # or a local path (relative to the YAML file); .jsonl[.gz] or .csv[.gz]
    text_field: sentence
    label_field: label
    labels: [positive, neutral, negative]   # label set in order (choices)
    prompt: "Classify the sentiment of this bank news: positive, neutral or negative.\\nText: {text}\\nAnswer:"
    metric: f1_weighted                     # or accuracy / f1_macro
    split_field: null                       # optional column with train/valid/test; else every row is "test"
    license: internal

`load_task_spec(path)` validates it (a bad value fails naming the field and the YAML file);
`custom_samples(spec, split)` reads the data through `finadapt.storage` (local or s3://, .gz
transparently) and renders the prompt; `finadapt.tasks.register_task(spec)` makes `get_task` and
`load_samples` serve it.
"""
from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from finadapt.errors import FinadaptError, InputNotFoundError

from .base import SPLITS, Sample
from .definition import TaskDefinition
from .jsonl import DataFormatError, iter_json_lines

DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".csv", ".csv.gz", ".tsv", ".tsv.gz")
SPLIT_ALIASES = {"train": "train", "training": "train", "valid": "valid", "validation": "valid",
                 "val": "valid", "dev": "valid", "test": "test", "testing": "test"}


class TaskSpecError(FinadaptError, ValueError):
    """A task spec is invalid; the message names the YAML file and the offending field."""

    label = "task spec error"


class CustomTaskSpec(BaseModel):
    """A user-defined classification task."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=100)
    data: str = Field(min_length=1, description="local path or s3:// URI of .jsonl/.jsonl.gz/.csv data")
    text_field: str = "text"
    label_field: str = "label"
    labels: list[str] = Field(min_length=2, description="label set in order (the choices)")
    prompt: str = Field(description="prompt template with a {text} placeholder")
    metric: Literal["accuracy", "f1_weighted", "f1_macro"] = "f1_weighted"
    split_field: Optional[str] = None
    id_field: Optional[str] = None
    group_field: Optional[str] = None
    license: str = "unspecified"
    citation: str = ""
    description: str = ""

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_strings(cls, value):
        if isinstance(value, list):
            out = []
            for item in value:
                if isinstance(item, bool):
                    raise ValueError(f"label {item!r} was read as a boolean by YAML; quote it (e.g. \"yes\")")
                out.append(str(item) if isinstance(item, (int, float)) else item)
            return out
        return value

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, value: list[str]) -> list[str]:
        if any(not v.strip() for v in value):
            raise ValueError("labels must be non-empty strings")
        if len(set(value)) != len(value):
            raise ValueError(f"labels must be unique, got {value}")
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt_has_text(cls, value: str) -> str:
        if "{text}" not in value:
            raise ValueError("prompt must contain the placeholder {text}")
        return value

    @field_validator("data")
    @classmethod
    def _data_suffix(cls, value: str) -> str:
        if not value.lower().endswith(DATA_SUFFIXES):
            raise ValueError(f"data must end with one of {', '.join(DATA_SUFFIXES)}, got {value!r}")
        return value

    def render(self, text: str) -> str:
        """The prompt for one input (only {text} is substituted; other braces stay as written)."""
        return self.prompt.replace("{text}", text)


def _format_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "missing":
            msg = "required field is missing"
        parts.append(f"field '{loc}': {msg}")
    return "; ".join(parts)


def load_task_spec(path: str | os.PathLike) -> CustomTaskSpec:
    """Read and validate a YAML task spec (local or s3://); a relative local `data` path is relative to the YAML."""
    from finadapt import storage

    location = str(path)
    if not storage.exists(location):
        raise InputNotFoundError(f"task spec not found: {location}")
    try:
        raw = yaml.safe_load(storage.read_text(location))
    except yaml.YAMLError as exc:
        raise TaskSpecError(f"{location}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise TaskSpecError(f"{location}: a task spec must be a YAML mapping, got {type(raw).__name__}")
    path = Path(location) if not storage.is_s3(location) else None
    data = raw.get("data")
    if isinstance(data, str) and data and "://" not in data and not os.path.isabs(os.path.expanduser(data)):
        resolved = str((path.parent / data).resolve()) if path is not None else storage.join(location.rsplit("/", 1)[0], data)
        raw = {**raw, "data": resolved}
    try:
        return CustomTaskSpec.model_validate(raw)
    except ValidationError as exc:
        raise TaskSpecError(f"{location}: invalid task spec: {_format_errors(exc)}") from None


def _records(uri: str) -> Iterator[tuple[int, dict]]:
    """(line number, record) from JSONL or CSV/TSV at `uri`, local or S3, gunzipped when .gz."""
    from finadapt.storage import open_input

    lower = uri.lower()
    with open_input(uri) as raw:
        if lower.endswith((".jsonl", ".jsonl.gz")):
            yield from iter_json_lines(io.TextIOWrapper(raw, encoding="utf-8"), uri)
            return
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        reader = csv.DictReader(text, delimiter="\t" if lower.endswith((".tsv", ".tsv.gz")) else ",")
        try:
            for row in reader:
                yield reader.line_num, row
        except csv.Error as exc:
            raise DataFormatError(f"{uri}: line {reader.line_num}: bad CSV: {exc}") from exc


def _label_lookup(labels: list[str]) -> dict[str, str]:
    """Exact labels, plus case/whitespace-insensitive spellings when those are unambiguous."""
    lookup = {label: label for label in labels}
    folded: dict[str, list[str]] = {}
    for label in labels:
        folded.setdefault(label.strip().lower(), []).append(label)
    for key, same in folded.items():
        if len(same) == 1:
            lookup.setdefault(key, same[0])
    return lookup


def custom_samples(spec: CustomTaskSpec, split: str = "test", limit: int | None = None) -> list[Sample]:
    """Samples of `split` (every row is "test" when the spec has no split_field)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if spec.split_field is None and split != "test":
        return []
    lookup = _label_lookup(spec.labels)
    out: list[Sample] = []
    seen: set[str] = set()
    for n, (lineno, rec) in enumerate(_records(spec.data)):
        where = f"{spec.data}: line {lineno}"
        if spec.split_field is not None:
            value = rec.get(spec.split_field)
            row_split = SPLIT_ALIASES.get(str(value).strip().lower()) if value is not None else None
            if row_split is None:
                raise DataFormatError(f"{where}: split field {spec.split_field!r} is {value!r}; expected train/valid/test")
            if row_split != split:
                continue
        text = rec.get(spec.text_field)
        if text is None or (isinstance(text, str) and not text.strip()):
            raise DataFormatError(f"{where}: missing or empty text field {spec.text_field!r}")
        value = rec.get(spec.label_field)
        if value is None:
            raise DataFormatError(f"{where}: missing label field {spec.label_field!r}")
        label = lookup.get(str(value)) or lookup.get(str(value).strip().lower())
        if label is None:
            raise DataFormatError(f"{where}: label {value!r} is not in the task's labels {spec.labels}")
        if spec.id_field is not None:
            if rec.get(spec.id_field) in (None, ""):
                raise DataFormatError(f"{where}: missing id field {spec.id_field!r}")
            sid = f"{spec.name}-{rec[spec.id_field]}"
        else:
            sid = f"{spec.name}-{split}-{n:05d}"
        if sid in seen:
            raise DataFormatError(f"{where}: duplicate id {sid!r}")
        seen.add(sid)
        text = str(text)
        out.append(Sample(
            id=sid,
            task=spec.name,
            query=spec.render(text),
            answer=label,
            choices=list(spec.labels),
            gold=spec.labels.index(label),
            text=text,
            group=str(rec.get(spec.group_field, "")) if spec.group_field else "",
            flare_exact=False,
        ))
        if limit is not None and len(out) >= limit:
            break
    return out


def task_definition(spec: CustomTaskSpec) -> TaskDefinition:
    """A TaskDefinition serving the spec's data (the data_dir argument of its loader is ignored)."""

    def _load(split: str, data_dir: Path | None = None) -> list[Sample]:
        return custom_samples(spec, split)

    return TaskDefinition(
        name=spec.name,
        kind="classification",
        choices=tuple(spec.labels),
        metric=spec.metric,
        license=spec.license,
        citation=spec.citation,
        prompt_template=spec.prompt,
        description=spec.description or f"user-defined task from {spec.data}",
        source_files=(spec.data,),
        flare_exact_splits=(),
        builtin=False,
        loader=_load,
    )
