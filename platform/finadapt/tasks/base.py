"""The FLARE sample format shared by every stage (tasks, evaluation, synthetic data, SFT).

A sample is a flat record so it travels unchanged through Ray Data (Arrow) and JSONL.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

TaskKind = Literal["classification", "headlines", "ner"]
Split = Literal["train", "valid", "test"]
SPLITS: tuple[str, ...] = ("train", "valid", "test")


@dataclass
class Sample:
    """One FLARE-format example.

    `query` is the raw FLARE prompt (no chat wrapper); `choices` the label set in FLARE's
    order and `gold` the index of the right label (-1 for NER, whose gold is `tags`).
    `group` is the Headlines question type or the FiQA-SA source (post/headline).
    """

    id: str
    task: str
    query: str
    answer: str
    choices: list[str]
    gold: int
    text: str
    group: str = ""
    tokens: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    flare_exact: bool = False

    def to_row(self) -> dict:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict) -> "Sample":
        names = cls.__dataclass_fields__.keys()
        clean = {k: row[k] for k in names if k in row}
        for list_field in ("choices", "tokens", "tags"):
            if list_field in clean and clean[list_field] is not None:
                clean[list_field] = [str(x) for x in list(clean[list_field])]
        return cls(**clean)
