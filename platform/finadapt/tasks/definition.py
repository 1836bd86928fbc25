"""What a task is: label set, metric, license, prompt and how to load its splits."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from .base import SPLITS, Sample

# loader(split, data_dir) -> samples of that split (data_dir None = paths.data_dir()).
Loader = Callable[[str, Optional[Path]], list[Sample]]


class TaskDefinition(BaseModel):
    """A FLARE task (or a user-defined one). `loader` returns the samples of one split."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="forbid")

    name: str
    kind: Literal["classification", "headlines", "ner"]
    choices: tuple[str, ...] = Field(description="label set in FLARE order (empty for NER)")
    metric: str = Field(description="primary metric name")
    license: str
    citation: str = ""
    prompt_template: str
    description: str = ""
    source_files: tuple[str, ...] = Field(default=(), description="data files, relative to the data dir")
    flare_exact_splits: tuple[str, ...] = Field(default=(), description="splits whose rows are FLARE's own")
    builtin: bool = True
    loader: Loader = Field(exclude=True, repr=False)

    def load(self, split: str, data_dir: str | Path | None = None, limit: int | None = None) -> list[Sample]:
        """Samples of `split` ("train" | "valid" | "test"), the first `limit` if given."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} for task {self.name!r}; expected one of {SPLITS}")
        from .split_guard import check  # every split read passes here: a sweep trial may not read test

        check(self.name, split)
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        samples = self.loader(split, Path(data_dir) if data_dir is not None else None)
        return samples if limit is None else samples[:limit]

    def info(self) -> dict:
        """Plain-data description for reports and manifests."""
        return self.model_dump(exclude={"loader"})


def normalize_text(text: str) -> str:
    """Whitespace-normalized text (runs of whitespace -> one space, stripped): the overlap key."""
    return " ".join(str(text).split())


def normalize_lower(text: str) -> str:
    """Lower-cased, whitespace-normalized text (headline matching key)."""
    return normalize_text(text).lower()

