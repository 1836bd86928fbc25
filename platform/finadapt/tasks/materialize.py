"""Materialize every built-in task split once, with a manifest, and load from there afterwards.

Layout::

    <cache_dir>/splits/<data_fingerprint>/manifest.json
    <cache_dir>/splits/<data_fingerprint>/<task>/<split>.jsonl      (one Sample row per line)

The fingerprint hashes the source files (sha256), the seed, the split-contract version and the split
code, so a change to any of them gives a new directory; an existing directory is never rewritten
unless `force=True`. The manifest records counts, label distributions, FLARE-exact row counts, the
source files with sha256, seed, code version, licenses and what each split rule removed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections import Counter
from pathlib import Path
from typing import Optional

from .. import __version__, paths
from ..errors import InputNotFoundError
from . import fiqasa, fpb, headlines, ner
from .base import SPLITS, Sample
from .definition import Loader, TaskDefinition, normalize_text
from .jsonl import _missing_file, read_jsonl, write_jsonl

SEED = 42
SPLIT_CONTRACT_VERSION = "1"
MANIFEST = "manifest.json"
BUILTIN_MODULES = {"fpb": fpb, "fiqasa": fiqasa, "headlines": headlines, "ner": ner}
_CODE_FILES = ("base.py", "prompts.py", "jsonl.py", "definition.py", "fpb.py", "fiqasa.py",
               "headlines.py", "ner.py", "materialize.py")
_sha_memo: dict[tuple[str, int, int], str] = {}
_code_memo: list[str] = []


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data directory (argument, else $FINADAPT_DATA_DIR, else ../shared/data); must exist."""
    d = Path(data_dir).expanduser().resolve() if data_dir is not None else paths.data_dir()
    if not d.is_dir():
        raise InputNotFoundError(
            f"Data directory not found: {d}. Set FINADAPT_DATA_DIR (or pass data_dir) to the folder "
            f"that holds fpb/, fiqa_sa/, headlines/ and finner/."
        )
    return d


def file_sha256(path: Path) -> str:
    """sha256 of a file (memoized per path, size and mtime)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _sha_memo:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _sha_memo[key] = h.hexdigest()
    return _sha_memo[key]


def code_sha256() -> str:
    """sha256 over the source of the split code (first 16 hex)."""
    if not _code_memo:
        h = hashlib.sha256()
        here = Path(__file__).resolve().parent
        for name in _CODE_FILES:
            h.update(name.encode() + b"\0" + (here / name).read_bytes() + b"\0")
        _code_memo.append(h.hexdigest()[:16])
    return _code_memo[0]


def source_files(data_dir: Path) -> dict[str, dict]:
    """{relative path: {"sha256", "bytes"}} for every source file of the built-in tasks."""
    out = {}
    for rel in sorted({rel for mod in BUILTIN_MODULES.values() for rel in mod.SOURCE_FILES}):
        path = data_dir / rel
        if not path.is_file():
            raise _missing_file(path)
        out[rel] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    return out


def data_fingerprint(data_dir: str | os.PathLike | None = None) -> str:
    """16-hex fingerprint of (source file hashes, seed, split contract version, split code)."""
    d = resolve_data_dir(data_dir)
    payload = {
        "sources": {rel: v["sha256"] for rel, v in source_files(d).items()},
        "seed": SEED,
        "split_contract": SPLIT_CONTRACT_VERSION,
        "code": code_sha256(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _label_distribution(kind: str, samples: list[Sample]) -> dict:
    if kind == "headlines":
        dist: dict[str, dict[str, int]] = {}
        for s in samples:
            dist.setdefault(s.group, {"Yes": 0, "No": 0})[s.answer] += 1
        return dist
    if kind == "ner":
        types = Counter(t[2:] for s in samples for t in s.tags if t.startswith("B-"))
        return {"entities": dict(sorted(types.items())),
                "sentences_with_entities": sum(1 for s in samples if s.answer)}
    counts = Counter(s.answer for s in samples)
    return {label: counts.get(label, 0) for label in samples[0].choices} if samples else {}


def _check(task: str, splits: dict[str, list[Sample]]) -> None:
    """Invariants every split must satisfy: unique ids, no train text in valid/test."""
    ids = [s.id for split in splits.values() for s in split]
    if len(ids) != len(set(ids)):
        dup = next(i for i, c in Counter(ids).items() if c > 1)
        raise RuntimeError(f"{task}: duplicate sample id {dup!r}")
    eval_keys = {normalize_text(s.text).lower() for sp in ("valid", "test") for s in splits[sp]}
    leaked = [s.id for s in splits["train"] if normalize_text(s.text).lower() in eval_keys]
    if leaked:
        raise RuntimeError(f"{task}: {len(leaked)} train rows share text with valid/test (e.g. {leaked[0]})")


def _build(data_dir: Path, out: Path, fingerprint: str) -> None:
    """Write every split and the manifest into `out` (a fresh directory)."""
    tasks = {}
    for name, mod in BUILTIN_MODULES.items():
        splits, notes = mod.build_splits(data_dir, SEED)
        _check(name, splits)
        (out / name).mkdir(parents=True)
        split_info = {}
        for split in SPLITS:
            path = out / name / f"{split}.jsonl"
            write_jsonl(path, (s.to_row() for s in splits[split]))
            split_info[split] = {
                "file": f"{name}/{split}.jsonl",
                "count": len(splits[split]),
                "flare_exact": sum(1 for s in splits[split] if s.flare_exact),
                "distinct_texts": len({normalize_text(s.text) for s in splits[split]}),
                "label_distribution": _label_distribution(BUILTIN_TASKS[name].kind, splits[split]),
                "sha256": file_sha256(path),
            }
        d = BUILTIN_TASKS[name]
        tasks[name] = {
            "kind": d.kind,
            "choices": list(d.choices),
            "metric": d.metric,
            "license": d.license,
            "citation": d.citation,
            "source_files": list(d.source_files),
            "flare_exact_splits": list(d.flare_exact_splits),
            "splits": split_info,
            "notes": notes,
        }
    manifest = {
        "data_fingerprint": fingerprint,
        "seed": SEED,
        "split_contract_version": SPLIT_CONTRACT_VERSION,
        "code_version": {"finadapt": __version__, "split_code_sha256": code_sha256()},
        "source_files": source_files(data_dir),
        "tasks": tasks,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def materialize_all(data_dir: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Materialize all built-in splits (once) and return `<cache_dir>/splits/<data_fingerprint>`."""
    d = resolve_data_dir(data_dir)
    fingerprint = data_fingerprint(d)
    final = paths.cache_dir() / "splits" / fingerprint
    if (final / MANIFEST).is_file() and not force:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{fingerprint}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _build(d, tmp, fingerprint)
        if final.exists():
            old = final.parent / f".old-{fingerprint}-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / MANIFEST).is_file():  # not a concurrent writer finishing first
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def load_manifest(data_dir: str | os.PathLike | None = None) -> dict:
    """The manifest of the current materialization (materializing first if needed)."""
    return json.loads((materialize_all(data_dir) / MANIFEST).read_text(encoding="utf-8"))


def load_split(task: str, split: str, data_dir: str | os.PathLike | None = None) -> list[Sample]:
    """Samples of one built-in task split, read from the materialized cache."""
    if task not in BUILTIN_MODULES:
        raise KeyError(f"unknown built-in task {task!r}; expected one of {tuple(BUILTIN_MODULES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    path = materialize_all(data_dir) / task / f"{split}.jsonl"
    return [Sample.from_row(row) for _, row in read_jsonl(path)]


def materialized_loader(task: str) -> Loader:
    """Loader for a built-in task: reads the materialized split (materializing it on first use)."""

    def _load(split: str, data_dir: Optional[Path] = None) -> list[Sample]:
        return load_split(task, split, data_dir)

    _load.__name__ = f"load_{task}"
    return _load


# The task modules own their raw parsing and metadata; their splits are served from the cache built here.
BUILTIN_TASKS: dict[str, TaskDefinition] = {
    name: mod.definition(materialized_loader(name)) for name, mod in BUILTIN_MODULES.items()
}
