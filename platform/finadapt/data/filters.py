"""Heuristic quality filters: named rules, each with its own threshold and drop count.

One pass labels every row with ``drop_reason`` (the first failing rule in RULE_ORDER, "" = kept),
so a single ``count_by(ds, "drop_reason")`` gives every rule's count and the report can say why
each document went. Ratios are over non-whitespace characters. A threshold of None turns its rule
off. Boundaries keep: a value equal to a min_*/max_* threshold passes.

Defaults were measured on the normalized corpora in shared/data/corpora (Reuters 21,577 docs,
Wikipedia 13,812, EDGAR 10-K sections 523); the numbers are in each field's comment.
"""
from __future__ import annotations

import re

import numpy as np
import ray.data
from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray.data.expressions import col

# Sentence punctuation that is not a "symbol"; everything else that is neither alphanumeric nor
# whitespace is ($ % # * < > | • ® & ...).
_PUNCT = ".,;:!?'\"()-/\u2013\u2014\u2018\u2019\u201c\u201d"

# Fixed order, cheap and decisive first, catch-all last: the first failing rule names the drop.
RULE_ORDER: tuple[str, ...] = (
    "min_chars", "max_chars", "min_words", "max_dup_line_ratio",
    "max_digit_ratio", "max_symbol_ratio", "min_alpha_ratio",
)


class FilterConfig(BaseModel):
    """Thresholds of the quality rules (None disables a rule)."""

    model_config = ConfigDict(extra="forbid")

    # Reuters: 2,076 docs < 100 chars, nearly all title-only BRIEF items; Wikipedia: 924 stubs
    # (title + one line). EDGAR's shortest section is 234 chars.
    min_chars: int | None = Field(100, ge=0, description="drop docs with fewer characters (too little context)")
    # Largest doc in the corpora: 351k chars (an EDGAR MD&A); this only guards against blobs.
    max_chars: int | None = Field(1_000_000, ge=1, description="drop docs with more characters (dumps, blobs)")
    # After min_chars, catches long tokens without words (URLs, number strings).
    min_words: int | None = Field(10, ge=0, description="drop docs with fewer whitespace-separated words")
    # Share of line characters in lines that repeat an earlier line. By characters, not lines:
    # EDGAR's flattened tables repeat one-char cells ("$", "%", "—") so up to 67% of an EDGAR
    # section's lines are repeats, yet at most 18.5% of its characters. Above 0.3: 3 Reuters docs
    # whose body is printed twice and 5 Wikipedia skeletons (repeated headings, title repeated).
    max_dup_line_ratio: float | None = Field(
        0.3, ge=0, le=1, description="drop docs whose repeated lines hold more than this share of line characters")
    # EDGAR sections are at most 11.2% digits (tables sit inside prose), so 0.4 keeps every filing.
    # Reuters: 259 docs > 0.4 (246 left after the length rules), all price boards and quote lists
    # ("CBT TREASURY BONDS CLSG ...", "NYSE-CONSOLIDATED ACTIVES ..."); earnings briefs ("Shr 11 cts
    # vs nine cts / Net 2.1 mln") sit at 0.2-0.4 and stay. Wikipedia: 1 doc > 0.4.
    max_digit_ratio: float | None = Field(
        0.4, ge=0, le=1, description="drop docs with a larger share of digits (number tables)")
    # Reuters max is 0.079 (tickers in <>); Wikipedia > 0.1: 4 docs of leftover wiki markup (2 left
    # after the length rules).
    max_symbol_ratio: float | None = Field(
        0.1, ge=0, le=1,
        description="drop docs with a larger share of symbols (not alphanumeric, space or sentence punctuation)")
    # Reuters: 273 docs < 0.5, 44 left after the earlier rules; EDGAR min 0.83, Wikipedia min 0.44.
    min_alpha_ratio: float | None = Field(0.5, ge=0, le=1, description="drop docs with a smaller share of letters")

    @model_validator(mode="after")
    def _bounds_ordered(self) -> "FilterConfig":
        if self.min_chars is not None and self.max_chars is not None and self.min_chars > self.max_chars:
            raise ValueError(f"min_chars {self.min_chars} > max_chars {self.max_chars}: every document would be dropped")
        return self


# Character classes, counted fast and exactly: the ASCII part of a text (str.encode drops the rest)
# by deleting the class's bytes in C (isspace includes the separators \x1c-\x1f); the non-ASCII
# characters, usually few, one by one with the str predicates themselves.
_ASCII_SPACE = bytes(c for c in range(128) if chr(c).isspace())
_ASCII_ALPHA = bytes(c for c in range(128) if chr(c).isalpha())
_ASCII_DIGIT = bytes(c for c in range(128) if chr(c).isdigit())
_ASCII_RUN = re.compile(r"[\x00-\x7f]+")


def _char_counts(text: str) -> tuple[int, int, int, int]:
    """(space, alpha, digit, alnum) characters of ``text``, as str.isspace/isalpha/isdigit/isalnum count them."""
    raw = text.encode("ascii", "ignore")
    n_space = len(raw) - len(raw.translate(None, _ASCII_SPACE))
    n_alpha = len(raw) - len(raw.translate(None, _ASCII_ALPHA))
    n_digit = len(raw) - len(raw.translate(None, _ASCII_DIGIT))
    n_alnum = n_alpha + n_digit
    if len(raw) < len(text):
        rest = _ASCII_RUN.sub("", text)
        n_space += sum(map(str.isspace, rest))
        n_alpha += sum(map(str.isalpha, rest))
        n_digit += sum(map(str.isdigit, rest))
        n_alnum += sum(map(str.isalnum, rest))
    return n_space, n_alpha, n_digit, n_alnum


def doc_stats(text: str) -> dict[str, float]:
    """The measurements the rules look at, for one text."""
    n_space, n_alpha, n_digit, n_alnum = _char_counts(text)
    n = max(len(text) - n_space, 1)
    n_punct = sum(text.count(p) for p in _PUNCT)
    seen: set[str] = set()
    line_chars = dup_chars = 0
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            continue
        line_chars += len(line)
        if line in seen:
            dup_chars += len(line)
        seen.add(line)
    return {
        "chars": len(text),
        "words": len(text.split()),
        "dup_line_ratio": dup_chars / max(line_chars, 1),
        "digit_ratio": n_digit / n,
        "symbol_ratio": (len(text) - n_space - n_alnum - n_punct) / n,
        "alpha_ratio": n_alpha / n,
    }


def drop_reason(text: str, config: FilterConfig) -> str:
    """Name of the first rule (RULE_ORDER) that ``text`` fails, or "" if it passes them all."""
    s = doc_stats(text)
    c = config
    checks = (
        ("min_chars", c.min_chars, lambda t: s["chars"] < t),
        ("max_chars", c.max_chars, lambda t: s["chars"] > t),
        ("min_words", c.min_words, lambda t: s["words"] < t),
        ("max_dup_line_ratio", c.max_dup_line_ratio, lambda t: s["dup_line_ratio"] > t),
        ("max_digit_ratio", c.max_digit_ratio, lambda t: s["digit_ratio"] > t),
        ("max_symbol_ratio", c.max_symbol_ratio, lambda t: s["symbol_ratio"] > t),
        ("min_alpha_ratio", c.min_alpha_ratio, lambda t: s["alpha_ratio"] < t),
    )
    for name, threshold, fails in checks:
        if threshold is not None and fails(threshold):
            return name
    return ""


def apply_filters(batch: dict[str, np.ndarray], config: FilterConfig | None = None) -> dict[str, np.ndarray]:
    """Ray Data batch UDF (numpy format): the batch plus a ``drop_reason`` column ("" = kept)."""
    config = config or FilterConfig()
    out = dict(batch)
    out["drop_reason"] = np.array([drop_reason(t, config) for t in batch["text"]], dtype=object)
    return out


def label_dataset(ds: ray.data.Dataset, config: FilterConfig | None = None) -> ray.data.Dataset:
    """Lazily add ``drop_reason`` to every row (count it, then keep_passing)."""
    return ds.map_batches(apply_filters, fn_kwargs={"config": config or FilterConfig()}, batch_format="numpy")


def keep_passing(ds: ray.data.Dataset) -> ray.data.Dataset:
    """Rows that passed every rule, without the ``drop_reason`` column."""
    return ds.filter(expr=col("drop_reason") == "").drop_columns(["drop_reason"])


def count_by(ds: ray.data.Dataset, column: str) -> dict[str, int]:
    """Rows per value of ``column``, aggregated in the workers (only the small result reaches the driver)."""
    from finadapt.data.aggregate import count_by as _count_by

    return _count_by(ds, column)
