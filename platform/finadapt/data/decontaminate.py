"""Remove (or report) pretraining documents that contain FLARE evaluation text.

A document is contaminated when it shares a long word n-gram (default 13, as in GPT-3's and
FLAN's decontamination) with any evaluation text of the valid/test splits. Tokens are lower-cased
runs of letters/digits (NFKC), so punctuation and tokenization differences ("company 's" in FPB vs
"company's" in news) do not hide a match. Evaluation texts shorter than n tokens count as one gram
matched as a contiguous run; below ``min_tokens`` (NER's "Lender", "BORROWER :") they are too
generic to be evidence and are skipped (counted in the index stats).

Matching is vectorized: tokens map to ids of the eval vocabulary (unknown = 0, never in a gram),
each window gets a polynomial hash (uint64) looked up by binary search in the sorted hash table of
its gram length (``np.searchsorted``: O(windows x log grams); ``np.isin`` re-sorted the 27k-gram table
for every document and was 90 % of the stage), and every hit is verified token by token, so hash
collisions cannot create a false match.
"""
from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import ray
import ray.data
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import BaseModel, ConfigDict, Field
from ray.data.expressions import col


_TOKEN = re.compile(r"[^\W_]+")
_BASE = 0x9E3779B97F4A7C15  # odd 64-bit constant; arithmetic wraps mod 2**64
MATCH_TYPE = pa.list_(pa.struct([("task", pa.string()), ("eval_id", pa.string()), ("ngram", pa.string())]))
_COLUMNS = ["contaminated", "contamination"]


class DecontamConfig(BaseModel):
    """What counts as contamination and what to do about it."""

    model_config = ConfigDict(extra="forbid")

    ngram: int = Field(13, ge=1, description="n of the word n-grams shared with an eval text that flag a document")
    mode: Literal["drop", "report"] = Field(
        "drop", description="drop: remove flagged docs; report: keep them, with the contaminated/contamination columns")
    tasks: list[str] = Field(["fpb", "fiqasa", "headlines", "ner"], description="FLARE tasks whose texts are protected")
    splits: list[str] = Field(["valid", "test"], description="splits whose texts are protected (the evaluation sets)")
    min_tokens: int = Field(8, ge=1, description="eval texts with fewer tokens are skipped (too generic to match on)")
    max_matches_per_doc: int = Field(5, ge=1, description="matches kept per doc (distinct eval ids, first found)")
    max_report_docs: int = Field(1000, ge=0, description="flagged docs listed in the report")
    actors: int = Field(2, ge=1, description="max actors of the matching pool (each holds the n-gram index)")


def tokenize(text: str) -> list[str]:
    """Lower-cased letter/digit runs of the NFKC text (punctuation and underscores dropped)."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())


@functools.lru_cache(maxsize=64)
def _powers(length: int) -> np.ndarray:
    """[B**(L-1), ..., B, 1] mod 2**64: a window's hash is its id vector dotted with these."""
    return np.array([pow(_BASE, length - 1 - k, 2**64) for k in range(length)], dtype=np.uint64)


_PREFILTER_SHIFT = np.uint64(64 - 22)  # 4 M one-byte slots by the top 22 bits of a hash


def _in_sorted(values: np.ndarray, table: np.ndarray, prefilter: np.ndarray | None = None) -> np.ndarray:
    """``np.isin(values, table)`` for a sorted, non-empty ``table`` (binary search, no re-sort).

    ``prefilter``: a byte per slot of the top hash bits, set for the table's hashes; values whose slot
    is empty cannot be in the table and skip the binary search (about 99 % of a corpus's windows).
    """
    if prefilter is not None:
        found = np.zeros(len(values), dtype=bool)
        maybe = np.flatnonzero(prefilter[values >> _PREFILTER_SHIFT])
        found[maybe] = _in_sorted(values[maybe], table)
        return found
    pos = np.searchsorted(table, values)
    return table[np.minimum(pos, len(table) - 1)] == values


@dataclass
class EvalNgramIndex:
    """The protected n-grams: eval-vocabulary token ids, grams -> eval refs, hashes per gram length."""

    n: int
    vocab: dict[str, int] = field(default_factory=dict)
    grams: dict[tuple[int, ...], list[int]] = field(default_factory=dict)
    refs: list[tuple[str, str]] = field(default_factory=list)  # (task, eval id)
    hashes: dict[int, np.ndarray] = field(default_factory=dict)  # gram length -> sorted hashes
    eval_texts: int = 0
    skipped_short: int = 0
    _prefilter: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def prefilter(self) -> np.ndarray:
        """Slots of the top 22 bits of every protected hash (built once per process, 4 MB)."""
        if self._prefilter is None:
            mask = np.zeros(1 << 22, dtype=bool)
            for table in self.hashes.values():
                mask[table >> _PREFILTER_SHIFT] = True
            self._prefilter = mask
        return self._prefilter

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_prefilter": None}  # rebuilt where it is used, not shipped

    def add(self, task: str, eval_id: str, text: str, min_tokens: int) -> None:
        tokens = tokenize(text)
        self.eval_texts += 1
        if len(tokens) < min_tokens:
            self.skipped_short += 1
            return
        ids = tuple(self.vocab.setdefault(t, len(self.vocab) + 1) for t in tokens)
        self.refs.append((task, eval_id))
        ref = len(self.refs) - 1
        length = min(self.n, len(ids))
        for start in range(len(ids) - length + 1):
            owners = self.grams.setdefault(ids[start:start + length], [])
            if len(owners) < 8 and ref not in owners:
                owners.append(ref)

    def finish(self) -> "EvalNgramIndex":
        """Compute the hash tables (call once after the last add)."""
        by_length: dict[int, list[int]] = {}
        for gram in self.grams:
            h = np.array(gram, dtype=np.uint64) @ _powers(len(gram))
            by_length.setdefault(len(gram), []).append(int(h))
        self.hashes = {L: np.unique(np.array(v, dtype=np.uint64)) for L, v in by_length.items()}
        self._prefilter = None
        return self

    def matches(self, text: str, limit: int) -> list[dict[str, str]]:
        """Up to ``limit`` matches (distinct eval ids) of ``text``: task, eval id, matching n-gram."""
        tokens = tokenize(text)
        if not tokens or not self.hashes:
            return []
        ids = np.fromiter((self.vocab.get(t, 0) for t in tokens), dtype=np.uint64, count=len(tokens))
        return self._matches(tokens, ids, limit)

    def _matches(self, tokens: list[str], ids: np.ndarray, limit: int) -> list[dict[str, str]]:
        found: list[tuple[int, int]] = []  # (start, length)
        for length, table in self.hashes.items():
            if len(ids) < length:
                continue
            window_hashes = sliding_window_view(ids, length) @ _powers(length)
            found.extend((int(p), length) for p in np.flatnonzero(_in_sorted(window_hashes, table, self.prefilter)))
        out: list[dict[str, str]] = []
        seen: set[int] = set()
        for start, length in sorted(found):
            for ref in self.grams.get(tuple(ids[start:start + length].tolist()), ()):  # exact check
                if ref not in seen and len(out) < limit:
                    seen.add(ref)
                    task, eval_id = self.refs[ref]
                    out.append({"task": task, "eval_id": eval_id, "ngram": " ".join(tokens[start:start + length])})
        return out

    def batch_matches(self, texts: Sequence[str], limit: int) -> list[list[dict[str, str]]]:
        """``[self.matches(t, limit) for t in texts]``, with the hash look-up vectorised over the batch:
        the windows of all documents are hashed and searched at once (windows that cross a document
        boundary are ignored), and only documents with a hit go through the per-document path."""
        out: list[list[dict[str, str]]] = [[] for _ in texts]
        if not self.hashes or not texts:
            return out
        tokens = [tokenize(t) for t in texts]
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        total = int(lengths.sum())
        if total == 0:
            return out
        vocab = self.vocab
        ids = np.fromiter((vocab.get(t, 0) for doc in tokens for t in doc), dtype=np.uint64, count=total)
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        doc_of = np.repeat(np.arange(len(tokens)), lengths)
        doc_end = (starts + lengths)[doc_of]
        hit = np.zeros(len(tokens), dtype=bool)
        for length, table in self.hashes.items():
            if total < length:
                continue
            n = total - length + 1
            window_hashes = sliding_window_view(ids, length) @ _powers(length)
            inside = np.arange(n) + length <= doc_end[:n]
            hit[doc_of[:n][_in_sorted(window_hashes, table, self.prefilter) & inside]] = True
        for i in np.flatnonzero(hit):
            out[i] = self._matches(tokens[i], ids[starts[i]: starts[i] + lengths[i]], limit)
        return out


def eval_texts(tasks: Sequence[str], splits: Sequence[str]) -> list[tuple[str, str, str]]:
    """(task, eval id, text) of every protected sample, first id per distinct text.

    The one reader of evaluation texts outside evaluation: decontamination must see them to remove them
    from training data, so a split banned for training (a reproduction's training step, a sweep trial)
    is readable here; what leaves is an n-gram index and near-copy references, never a training row."""
    from finadapt.tasks import load_samples, split_guard

    out, seen = [], set()
    for task in tasks:
        for split in splits:
            with split_guard.allowed(split):
                samples = load_samples(task, split)
            for s in samples:
                if s.text not in seen:  # Headlines: one sample per (headline, question)
                    seen.add(s.text)
                    out.append((task, s.id, s.text))
    return out


def build_eval_index(config: DecontamConfig | None = None,
                     texts: Iterable[tuple[str, str, str]] | None = None) -> EvalNgramIndex:
    """Index of the protected n-grams (from the FLARE splits unless ``texts`` is given)."""
    config = config or DecontamConfig()
    index = EvalNgramIndex(n=config.ngram)
    for task, eval_id, text in (texts if texts is not None else eval_texts(config.tasks, config.splits)):
        index.add(task, eval_id, text, config.min_tokens)
    return index.finish()


class ContaminationMarker:
    """Ray Data class UDF (pyarrow batches): adds ``contaminated`` and ``contamination``.

    Takes the index as an ObjectRef (``ray.put`` once) so each actor fetches it once.
    """

    def __init__(self, index_ref: Any, limit: int = 5):
        self.index: EvalNgramIndex = ray.get(index_ref) if isinstance(index_ref, ray.ObjectRef) else index_ref
        self.limit = limit

    def __call__(self, batch: pa.Table) -> pa.Table:
        found = self.index.batch_matches(batch.column("text").to_pylist(), self.limit)
        batch = batch.append_column("contaminated", pa.array([bool(m) for m in found], pa.bool_()))
        return batch.append_column("contamination", pa.array(found, MATCH_TYPE))


def mark_contamination(ds: ray.data.Dataset, index: EvalNgramIndex, config: DecontamConfig | None = None
                       ) -> ray.data.Dataset:
    """Lazily add ``contaminated`` (bool) and ``contamination`` (list of task/eval_id/ngram)."""
    config = config or DecontamConfig()
    return ds.map_batches(
        ContaminationMarker, batch_format="pyarrow",
        fn_constructor_kwargs={"index_ref": ray.put(index), "limit": config.max_matches_per_doc},
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=config.actors),
    )


@dataclass
class DecontamResult:
    """The dataset (flagged docs dropped or kept, per mode) and what matched."""

    dataset: ray.data.Dataset
    contaminated: int
    by_task: dict[str, int]
    report: list[dict[str, Any]]
    eval_texts: int
    skipped_short: int
    rows_by_source: dict[str, int] = field(default_factory=dict)  # input rows (needs a `source` column)
    kept_by_source: dict[str, int] = field(default_factory=dict)  # rows of `dataset`


def _block_summary(block: pa.Table, limit: int) -> dict[str, Any]:
    """Rows and flagged rows per source, flagged docs per task, the block's first `limit` flagged docs."""
    flags = block.column("contaminated").to_pylist()
    sources = block.column("source").to_pylist() if "source" in block.column_names else [None] * len(flags)
    rows: dict[str, int] = {}
    dirty: dict[str, int] = {}
    for source, flag in zip(sources, flags):
        rows[str(source)] = rows.get(str(source), 0) + 1
        if flag:
            dirty[str(source)] = dirty.get(str(source), 0) + 1
    flagged = block.filter(block.column("contaminated"))
    by_task: dict[str, int] = {}
    for matches in flagged.column("contamination").to_pylist():
        for task in sorted({m["task"] for m in matches}):
            by_task[task] = by_task.get(task, 0) + 1
    report = [{"id": r["id"], "source": r.get("source"), "matches": list(r["contamination"])}
              for r in flagged.slice(0, limit).to_pylist()]
    return {"rows": rows, "dirty": dirty, "by_task": by_task, "report": report}


def decontaminate(ds: ray.data.Dataset, config: DecontamConfig | None = None,
                  index: EvalNgramIndex | None = None) -> DecontamResult:
    """Flag docs sharing an n-gram with an eval text; drop them or keep them (mode), and report.

    The flagged dataset is materialized (object store) so the report does not rerun the matching;
    counts, ``by_task`` (flagged docs per eval task, from each doc's kept matches) and the report
    (flagged docs in dataset order, up to ``max_report_docs``) come from one streaming pass over it.
    """
    from finadapt.data.aggregate import block_summaries

    config = config or DecontamConfig()
    index = index or build_eval_index(config)
    marked = mark_contamination(ds, index, config).materialize()
    columns = ["id", "contaminated", "contamination"] + (["source"] if "source" in marked.schema().names else [])
    rows: dict[str, int] = {}
    dirty: dict[str, int] = {}
    by_task: dict[str, int] = {}
    report: list[dict[str, Any]] = []
    for summary in block_summaries(marked, _block_summary, columns=columns, limit=config.max_report_docs):
        for name, total in (("rows", rows), ("dirty", dirty), ("by_task", by_task)):
            for key, n in summary[name].items():
                total[key] = total.get(key, 0) + n
        report.extend(summary["report"][: config.max_report_docs - len(report)])
    contaminated = sum(dirty.values())
    dataset = marked
    kept = dict(rows)
    if config.mode == "drop":
        dataset = marked.filter(expr=~col("contaminated")).drop_columns(_COLUMNS)
        kept = {k: n - dirty.get(k, 0) for k, n in rows.items() if n - dirty.get(k, 0)}
    has_source = "source" in columns
    return DecontamResult(dataset=dataset, contaminated=contaminated, by_task=dict(sorted(by_task.items())),
                          report=report, eval_texts=index.eval_texts, skipped_short=index.skipped_short,
                          rows_by_source=dict(sorted(rows.items())) if has_source else {},
                          kept_by_source=dict(sorted(kept.items())) if has_source else {})
