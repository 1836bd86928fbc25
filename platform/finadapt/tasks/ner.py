"""FinNER: SEC-filing loan agreements (Salinas Alvarado et al. 2015), PER/ORG/LOC.

test = PIXIU/FLARE NER test (98 sentences) and valid = PIXIU/FLARE NER valid (103), both FLARE-exact
with PIXIU's BIO tags; train = FIN5 sentences whose space-joined text is in neither, with the source's
IO tags converted to BIO and MISC dropped (FLARE's types are PER, ORG, LOC).
The answer is FLARE's: one line "entity name, TYPE" per entity (tokens joined by spaces).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .base import Sample
from .definition import Loader, TaskDefinition, normalize_text
from .jsonl import DataFormatError, read_jsonl
from .prompts import NER_TEMPLATE, NER_TYPES, ner_query

NAME = "ner"
TEST_FILE = "finner/pixiu_split_test.jsonl.gz"
VALID_FILE = "finner/pixiu_split_valid.jsonl.gz"
TRAIN_FILE = "finner/train.jsonl.gz"
SOURCE_FILES = (TRAIN_FILE, VALID_FILE, TEST_FILE)
LICENSE = "CC BY 3.0 (cite Salinas Alvarado, Verspoor & Baldwin 2015)"
CITATION = (
    "Salinas Alvarado, Verspoor, Baldwin (2015). \"Domain Adaption of Named Entity Recognition to "
    'Support Credit Risk Assessment." ALTA Workshop 2015.'
)
BIO_TAGS = frozenset({"O"} | {f"{p}-{t}" for p in ("B", "I") for t in NER_TYPES})


def io_to_bio(tags: Sequence[str], types: Sequence[str] = NER_TYPES) -> list[str]:
    """IO (or loose BIO) tags -> BIO over `types`; other types (e.g. MISC) become O.

    An I-X that follows O or a different type starts an entity and becomes B-X.
    """
    out: list[str] = []
    prev = "O"
    for tag in tags:
        if tag == "O" or "-" not in tag:
            new = "O"
        else:
            prefix, typ = tag.split("-", 1)
            if typ not in types:
                new = "O"
            elif prefix == "B" or prev == "O" or prev[2:] != typ:
                new = f"B-{typ}"
            else:
                new = f"I-{typ}"
        out.append(new)
        prev = new
    return out


def bio_entities(tokens: Sequence[str], tags: Sequence[str]) -> list[tuple[str, str]]:
    """(entity text, type) spans of a BIO sequence; entity = its tokens joined by spaces."""
    if len(tokens) != len(tags):
        raise ValueError(f"{len(tokens)} tokens but {len(tags)} tags")
    spans: list[tuple[str, list[str]]] = []
    current: tuple[str, list[str]] | None = None
    for tok, tag in zip(tokens, tags):
        if tag.startswith("B-") or (tag.startswith("I-") and (current is None or current[0] != tag[2:])):
            current = (tag[2:], [tok])
            spans.append(current)
        elif tag.startswith("I-"):
            current[1].append(tok)
        else:
            current = None
    return [(" ".join(toks), typ) for typ, toks in spans]


def entities_answer(tokens: Sequence[str], tags: Sequence[str]) -> str:
    """FLARE's NER answer: "entity name, TYPE" lines joined with newlines."""
    return "\n".join(f"{ent}, {typ}" for ent, typ in bio_entities(tokens, tags))


def _sample(split: str, idx: int, tokens: list[str], tags: list[str], flare_exact: bool) -> Sample:
    text = " ".join(tokens)
    return Sample(
        id=f"{NAME}-{split}-{idx:05d}",
        task=NAME,
        query=ner_query(text),
        answer=entities_answer(tokens, tags),
        choices=[],
        gold=-1,
        text=text,
        tokens=list(tokens),
        tags=list(tags),
        flare_exact=flare_exact,
    )


def _tokens_tags(rec: dict, path: Path, lineno: int) -> tuple[list[str], list[str]]:
    tokens, tags = rec.get("tokens"), rec.get("tags")
    if not isinstance(tokens, list) or not isinstance(tags, list) or not tokens:
        raise DataFormatError(f"{path}: line {lineno}: 'tokens' and 'tags' must be non-empty lists")
    if len(tokens) != len(tags):
        raise DataFormatError(f"{path}: line {lineno}: {len(tokens)} tokens but {len(tags)} tags")
    return [str(t) for t in tokens], [str(t) for t in tags]


def _read_pixiu(data_dir: Path, rel: str, split: str) -> tuple[list[Sample], int]:
    path = data_dir / rel
    out, answer_mismatch = [], 0
    for n, (lineno, rec) in enumerate(read_jsonl(path)):
        tokens, tags = _tokens_tags(rec, path, lineno)
        bad = sorted(set(tags) - BIO_TAGS)
        if bad:
            raise DataFormatError(f"{path}: line {lineno}: tags {bad} are not BIO over {list(NER_TYPES)}")
        sample = _sample(split, n, tokens, tags, True)
        if "text" in rec and normalize_text(rec["text"]) != normalize_text(sample.text):
            raise DataFormatError(f"{path}: line {lineno}: 'text' is not the space-joined tokens")
        answer_mismatch += "answer" in rec and rec["answer"] != sample.answer
        out.append(sample)
    return out, answer_mismatch


def build_splits(data_dir: Path, seed: int) -> tuple[dict[str, list[Sample]], dict]:
    """All three splits plus notes for the manifest (seed unused: nothing is sampled)."""
    test, test_mismatch = _read_pixiu(data_dir, TEST_FILE, "test")
    valid, valid_mismatch = _read_pixiu(data_dir, VALID_FILE, "valid")
    eval_keys = {normalize_text(s.text) for s in test + valid}
    path = data_dir / TRAIN_FILE
    train, total, removed, misc = [], 0, 0, 0
    for n, (lineno, rec) in enumerate(read_jsonl(path)):
        total += 1
        tokens, tags = _tokens_tags(rec, path, lineno)
        if normalize_text(" ".join(tokens)) in eval_keys:
            removed += 1
            continue
        misc += sum(1 for t in tags if t != "O" and t.split("-", 1)[-1] not in NER_TYPES)
        train.append(_sample("train", n, tokens, io_to_bio(tags), False))
    notes = {
        "fin5_sentences": total,
        "train_removed_text_in_valid_or_test": removed,
        "misc_tokens_dropped": misc,
        "pixiu_answers_differing_from_tags": test_mismatch + valid_mismatch,
        "tag_scheme": "BIO over PER/ORG/LOC (train converted from IO)",
    }
    return {"train": train, "valid": valid, "test": test}, notes


def definition(loader: Loader) -> TaskDefinition:
    """FinNER's task definition; its splits come through `loader` (the materialized cache)."""
    return TaskDefinition(
        name=NAME,
        kind="ner",
        choices=(),
        metric="entity_f1",
        license=LICENSE,
        citation=CITATION,
        prompt_template=NER_TEMPLATE,
        description="FinNER (SEC loan agreements): entity-level micro F1 over PER/ORG/LOC (seqeval).",
        source_files=SOURCE_FILES,
        flare_exact_splits=("valid", "test"),
        loader=loader,
    )
