"""FiQA 2018 task 1 sentiment (headlines + microblog posts), FLARE's 750/188/235 split.

Gold comes from the raw score exactly as PIXIU discretised it (score < -0.1 negative, < 0.1 neutral,
else positive); the file's `label` must agree. Valid and test are FLARE's rows unchanged. FLARE's
split puts a few identical sentences (annotated for different targets) in more than one split, so
train rows whose text also occurs in valid or test are removed (counted in the manifest).
"""
from __future__ import annotations

from pathlib import Path

from .base import Sample
from .definition import Loader, TaskDefinition, normalize_text
from .jsonl import DataFormatError, read_jsonl
from .prompts import FIQASA_CHOICES, FIQASA_SOURCES, FIQASA_TEMPLATE, fiqasa_query

NAME = "fiqasa"
SPLIT_FILES = {s: f"fiqa_sa/flare_split_{s}.jsonl.gz" for s in ("train", "valid", "test")}
SOURCE_FILES = tuple(SPLIT_FILES.values())
LICENSE = "research-only (FiQA 2018 challenge data; no explicit license)"
CITATION = (
    "Maia, Handschuh, Freitas, Davis, McDermott, Zarrouk, Balahur (2018). "
    '"WWW\'18 Open Challenge: Financial Opinion Mining and Question Answering." WWW\'18 Companion.'
)


def score_to_label(score: float) -> str:
    """PIXIU's discretisation of a FiQA sentiment score."""
    if score < -0.1:
        return "negative"
    if score < 0.1:
        return "neutral"
    return "positive"


def _read_split(data_dir: Path, split: str) -> list[Sample]:
    path = data_dir / SPLIT_FILES[split]
    out = []
    for n, (lineno, rec) in enumerate(read_jsonl(path)):
        text, source, score = rec.get("text"), rec.get("source"), rec.get("score")
        if not isinstance(text, str) or not text.strip():
            raise DataFormatError(f"{path}: line {lineno}: missing or empty 'text'")
        if source not in FIQASA_SOURCES:
            raise DataFormatError(f"{path}: line {lineno}: 'source' {source!r} not in {list(FIQASA_SOURCES)}")
        if not isinstance(score, (int, float)) or isinstance(score, bool):
            raise DataFormatError(f"{path}: line {lineno}: 'score' {score!r} is not a number")
        label = score_to_label(float(score))
        if str(rec.get("label", "")).strip().lower() != label:
            raise DataFormatError(
                f"{path}: line {lineno}: label {rec.get('label')!r} disagrees with score {score} (-> {label})"
            )
        out.append(Sample(
            id=f"{NAME}-{split}-{n:05d}",
            task=NAME,
            query=fiqasa_query(text, source),
            answer=label,
            choices=list(FIQASA_CHOICES),
            gold=FIQASA_CHOICES.index(label),
            text=text,
            group=source,
            flare_exact=True,
        ))
    return out


def build_splits(data_dir: Path, seed: int) -> tuple[dict[str, list[Sample]], dict]:
    """FLARE's splits (seed unused: nothing is sampled); train decontaminated against valid/test."""
    splits = {s: _read_split(data_dir, s) for s in ("train", "valid", "test")}
    eval_keys = {normalize_text(s.text) for split in ("valid", "test") for s in splits[split]}
    flare_train = len(splits["train"])
    splits["train"] = [s for s in splits["train"] if normalize_text(s.text) not in eval_keys]
    valid_keys = {normalize_text(s.text) for s in splits["valid"]}
    notes = {
        "flare_train_rows": flare_train,
        "train_rows_removed_text_in_valid_or_test": flare_train - len(splits["train"]),
        "valid_test_shared_texts": len(valid_keys & {normalize_text(s.text) for s in splits["test"]}),
    }
    return splits, notes


def definition(loader: Loader) -> TaskDefinition:
    """FiQA-SA's task definition; its splits come through `loader` (the materialized cache)."""
    return TaskDefinition(
        name=NAME,
        kind="classification",
        choices=FIQASA_CHOICES,
        metric="f1_weighted",
        license=LICENSE,
        citation=CITATION,
        prompt_template=FIQASA_TEMPLATE,
        description="FiQA-SA 3-class sentiment of financial headlines and microblog posts (FLARE split).",
        source_files=SOURCE_FILES,
        flare_exact_splits=("train", "valid", "test"),
        loader=loader,
    )
