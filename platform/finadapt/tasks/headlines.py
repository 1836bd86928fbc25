"""Gold commodity news headlines (Sinha & Khandait), 9 yes/no questions per headline.

Split contract: the 1,140 fully labelled headlines of PIXIU's validation split are split by distinct
lower-cased, whitespace-normalized text (seeded shuffle) into test ~50%, valid ~20%, train ~30%.
Test and valid hold one row per headline x question (9 questions); a text that occurs twice keeps
one headline. Train adds the Kaggle headlines for the 4 questions they label exactly (price_up,
price_down, price_constant, asset_comparison) after removing every headline that equals a valid/test
headline or nearly equals one (rapidfuzz ratio >= 95); the same near-duplicate rule is applied to the
PIXIU train headlines. None of these splits is FLARE's test set (flare_exact False everywhere).
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from rapidfuzz import fuzz, process

from .base import Sample
from .definition import Loader, TaskDefinition, normalize_lower
from .jsonl import DataFormatError, read_jsonl
from .prompts import HEADLINE_COLUMNS, HEADLINES_CHOICES, HEADLINES_TEMPLATE, headlines_query

NAME = "headlines"
PIXIU_FILE = "headlines/pixiu_split_valid.jsonl.gz"
KAGGLE_FILE = "headlines/kaggle_gold_sentiment_10570.jsonl.gz"
SOURCE_FILES = (PIXIU_FILE, KAGGLE_FILE)
TEST_FRACTION = 0.5
VALID_FRACTION = 0.2
NEAR_DUP_RATIO = 95.0
# The 4 questions the Kaggle file labels exactly, in FLARE's question order.
KAGGLE_COLUMNS = tuple(c for c in HEADLINE_COLUMNS if c in {"price_up", "price_constant", "price_down", "asset_comparison"})
LICENSE = "research-only (Sinha & Khandait gold news headlines; no license stated)"
CITATION = (
    'Sinha, Khandait (2021). "Impact of News on the Commodity Market: Dataset and Results." '
    "FICC 2021 (arXiv:2009.04202)."
)


def _labels(rec: dict, columns: tuple[str, ...], path: Path, lineno: int) -> dict[str, int]:
    out = {}
    for col in columns:
        value = rec.get(col)
        if isinstance(value, bool) or value not in (0, 1):
            raise DataFormatError(f"{path}: line {lineno}: '{col}' must be 0 or 1, got {value!r}")
        out[col] = int(value)
    return out


def _text(rec: dict, path: Path, lineno: int) -> str:
    text = rec.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataFormatError(f"{path}: line {lineno}: missing or empty 'text'")
    return text


def _rows(split: str, key: str, text: str, labels: dict[str, int]) -> list[Sample]:
    return [
        Sample(
            id=f"{NAME}-{split}-{key}-{col}",
            task=NAME,
            query=headlines_query(text, col),
            answer="Yes" if value == 1 else "No",
            choices=list(HEADLINES_CHOICES),
            gold=0 if value == 1 else 1,
            text=text,
            group=col,
            flare_exact=False,
        )
        for col, value in labels.items()
    ]


def near_duplicates(queries: list[str], choices: list[str], threshold: float = NEAR_DUP_RATIO) -> list[bool]:
    """For each query, whether some choice has rapidfuzz `fuzz.ratio` >= threshold (inputs pre-normalized)."""
    if not queries or not choices:
        return [False] * len(queries)
    out: list[bool] = []
    for start in range(0, len(queries), 2048):  # bounded memory: 2048 x len(choices) float32
        scores = process.cdist(queries[start:start + 2048], choices, scorer=fuzz.ratio,
                               score_cutoff=threshold, workers=-1)
        out.extend(bool(x) for x in (np.max(scores, axis=1) >= threshold))
    return out


def build_splits(data_dir: Path, seed: int) -> tuple[dict[str, list[Sample]], dict]:
    """All three splits plus notes for the manifest."""
    path = data_dir / PIXIU_FILE
    by_key: dict[str, list[tuple[int, str, dict[str, int]]]] = {}
    n_rows = 0
    for n, (lineno, rec) in enumerate(read_jsonl(path)):
        n_rows += 1
        text = _text(rec, path, lineno)
        by_key.setdefault(normalize_lower(text), []).append((n, text, _labels(rec, HEADLINE_COLUMNS, path, lineno)))
    keys = sorted(by_key)
    random.Random(seed).shuffle(keys)
    n_test, n_valid = round(TEST_FRACTION * len(keys)), round(VALID_FRACTION * len(keys))
    split_of = {k: ("test" if i < n_test else "valid" if i < n_test + n_valid else "train") for i, k in enumerate(keys)}
    conflicting = sum(1 for rows in by_key.values() if len({tuple(r[2].values()) for r in rows}) > 1)

    eval_keys = sorted(k for k, s in split_of.items() if s != "train")
    eval_set = set(eval_keys)
    pixiu_train_keys = sorted(k for k, s in split_of.items() if s == "train")
    near_pixiu = dict(zip(pixiu_train_keys, near_duplicates(pixiu_train_keys, eval_keys)))

    splits: dict[str, list[Sample]] = {"train": [], "valid": [], "test": []}
    # Headlines in source-file order; a duplicated text keeps its first row.
    for key, rows in sorted(by_key.items(), key=lambda kv: kv[1][0][0]):
        split = split_of[key]
        if split == "train" and near_pixiu[key]:
            continue
        idx, text, labels = rows[0]
        splits[split].extend(_rows(split, f"{idx:04d}", text, labels))

    kpath = data_dir / KAGGLE_FILE
    kaggle: list[tuple[str, str, str, dict[str, int]]] = []  # (id, key, text, labels)
    for n, (lineno, rec) in enumerate(read_jsonl(kpath)):
        rid = rec.get("id", n)
        kaggle.append((f"kaggle{int(rid):05d}" if isinstance(rid, int) else f"kaggle-{rid}",
                       normalize_lower(_text(rec, kpath, lineno)), _text(rec, kpath, lineno),
                       _labels(rec, KAGGLE_COLUMNS, kpath, lineno)))
    exact = [k for _, k, _, _ in kaggle if k in eval_set]
    candidates = sorted({k for _, k, _, _ in kaggle if k not in eval_set})
    near = {k for k, hit in zip(candidates, near_duplicates(candidates, eval_keys)) if hit}
    seen = set(pixiu_train_keys)
    dropped_same_as_pixiu_train = dropped_duplicate = removed_near = 0
    for rid, key, text, labels in kaggle:
        if key in eval_set:
            continue
        if key in near:
            removed_near += 1
            continue
        if key in seen:
            if key in split_of:
                dropped_same_as_pixiu_train += 1
            else:
                dropped_duplicate += 1
            continue
        seen.add(key)
        splits["train"].extend(_rows("train", rid, text, labels))

    notes = {
        "pixiu_rows": n_rows,
        "pixiu_distinct_texts": len(keys),
        "pixiu_duplicate_rows_merged": n_rows - len(keys),
        "pixiu_duplicate_texts_with_conflicting_labels": conflicting,
        "headlines_per_split": {s: sum(1 for k in keys if split_of[k] == s) for s in ("train", "valid", "test")},
        "pixiu_train_removed_near_match_valid_or_test": sum(near_pixiu.values()),
        "kaggle_rows": len(kaggle),
        "kaggle_removed_exact_match_valid_or_test": len(exact),
        "kaggle_removed_near_match_valid_or_test": removed_near,
        "kaggle_removed_matching_valid_or_test": len(exact) + removed_near,
        "kaggle_dropped_same_text_as_pixiu_train": dropped_same_as_pixiu_train,
        "kaggle_dropped_duplicate_text": dropped_duplicate,
        "kaggle_headlines_in_train": sum(1 for s in splits["train"] if s.id.startswith(f"{NAME}-train-kaggle")) // len(KAGGLE_COLUMNS),
        "kaggle_questions": list(KAGGLE_COLUMNS),
        "near_duplicate_rule": f"rapidfuzz fuzz.ratio >= {NEAR_DUP_RATIO:g} on lower-cased, whitespace-normalized text",
    }
    return splits, notes


def definition(loader: Loader) -> TaskDefinition:
    """Headlines's task definition; its splits come through `loader` (the materialized cache)."""
    return TaskDefinition(
        name=NAME,
        kind="headlines",
        choices=HEADLINES_CHOICES,
        metric="avg_f1",
        license=LICENSE,
        citation=CITATION,
        prompt_template=HEADLINES_TEMPLATE,
        description="Gold news headlines, 9 yes/no questions; score = mean weighted F1 over the 9 types.",
        source_files=SOURCE_FILES,
        flare_exact_splits=(),
        loader=loader,
    )
