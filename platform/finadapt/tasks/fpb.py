"""Financial PhraseBank (Malo et al. 2014) under the platform's split contract.

valid = the 774 sentences of PIXIU's FPB validation split (FLARE-exact); test = 970 sentences sampled
with the seed from the rest of `sentences_50agree` (FLARE's test size, not its membership);
train = what remains. "Rest" drops every 50agree sentence whose whitespace-normalized text equals a
valid text; duplicate sentences are kept once, and sentences that occur with conflicting labels are
dropped (neither split can score them fairly).
"""
from __future__ import annotations

import random
from pathlib import Path

from .base import Sample
from .definition import Loader, TaskDefinition, normalize_text
from .jsonl import DataFormatError, read_jsonl
from .prompts import FPB_CHOICES, FPB_TEMPLATE, fpb_query

NAME = "fpb"
VALID_FILE = "fpb/pixiu_split_valid.jsonl.gz"
ALL_FILE = "fpb/sentences_50agree.jsonl.gz"
SOURCE_FILES = (VALID_FILE, ALL_FILE)
TEST_SIZE = 970
LICENSE = "CC BY-NC-SA 3.0 (non-commercial; commercial use requires the authors' permission)"
CITATION = (
    'Malo, Sinha, Korhonen, Wallenius, Takala (2014). "Good debt or bad debt: Detecting semantic '
    'orientations in economic texts." JASIST 65(4).'
)


def _sample(split: str, idx: int, text: str, label: str, flare_exact: bool) -> Sample:
    return Sample(
        id=f"{NAME}-{split}-{idx:05d}",
        task=NAME,
        query=fpb_query(text),
        answer=label,
        choices=list(FPB_CHOICES),
        gold=FPB_CHOICES.index(label),
        text=text,
        flare_exact=flare_exact,
    )


def _label(value: object, path: Path, lineno: int) -> str:
    label = str(value).strip().lower() if value is not None else ""
    if label not in FPB_CHOICES:
        raise DataFormatError(f"{path}: line {lineno}: FPB label {value!r} not in {list(FPB_CHOICES)}")
    return label


def _text(rec: dict, path: Path, lineno: int) -> str:
    text = rec.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataFormatError(f"{path}: line {lineno}: missing or empty 'text'")
    return text


def build_splits(data_dir: Path, seed: int) -> tuple[dict[str, list[Sample]], dict]:
    """All three splits plus notes for the manifest (what was removed and why)."""
    valid_path = data_dir / VALID_FILE
    valid = []
    for n, (lineno, rec) in enumerate(read_jsonl(valid_path)):
        valid.append(_sample("valid", n, _text(rec, valid_path, lineno), _label(rec.get("answer"), valid_path, lineno), True))
    valid_keys = {normalize_text(s.text) for s in valid}

    all_path = data_dir / ALL_FILE
    rest: list[tuple[int, str, str]] = []  # (row index in 50agree, text, label)
    labels_of: dict[str, set[str]] = {}
    total = removed_valid = duplicates = 0
    for n, (lineno, rec) in enumerate(read_jsonl(all_path)):
        total += 1
        text, label = _text(rec, all_path, lineno), _label(rec.get("label"), all_path, lineno)
        key = normalize_text(text)
        if key in valid_keys:
            removed_valid += 1
            continue
        if key in labels_of:
            duplicates += 1
            labels_of[key].add(label)
            continue
        labels_of[key] = {label}
        rest.append((n, text, label))
    conflicting = {k for k, labels in labels_of.items() if len(labels) > 1}
    rest = [r for r in rest if normalize_text(r[1]) not in conflicting]
    if len(rest) < TEST_SIZE:
        raise DataFormatError(f"{all_path}: only {len(rest)} sentences left after removing valid; need {TEST_SIZE}")
    test_rows = set(random.Random(seed).sample(range(len(rest)), TEST_SIZE))
    test = [_sample("test", idx, t, lab, False) for i, (idx, t, lab) in enumerate(rest) if i in test_rows]
    train = [_sample("train", idx, t, lab, False) for i, (idx, t, lab) in enumerate(rest) if i not in test_rows]
    notes = {
        "sentences_50agree": total,
        "removed_matching_valid": removed_valid,
        "duplicate_sentences_dropped": duplicates,
        "conflicting_label_sentences_dropped": len(conflicting),
        "rest_after_removal": len(rest),
        "test_sampled_from_rest": TEST_SIZE,
    }
    return {"train": train, "valid": valid, "test": test}, notes


def definition(loader: Loader) -> TaskDefinition:
    """FPB's task definition; its splits come through `loader` (the materialized cache)."""
    return TaskDefinition(
        name=NAME,
        kind="classification",
        choices=FPB_CHOICES,
        metric="f1_weighted",
        license=LICENSE,
        citation=CITATION,
        prompt_template=FPB_TEMPLATE,
        description="Financial PhraseBank sentence sentiment (50% agreement); valid FLARE-exact, test seeded sample.",
        source_files=SOURCE_FILES,
        flare_exact_splits=("valid",),
        loader=loader,
    )
