"""Corpus normalization and quality filters: edge cases of normalize_text, each rule's hit/miss at
its boundary, and per-reason counts aggregated by Ray."""
from __future__ import annotations

import numpy as np
import pytest
import ray

from finadapt.data.filters import (
    RULE_ORDER, FilterConfig, apply_filters, count_by, doc_stats, drop_reason, keep_passing, label_dataset,
)
from finadapt.data.normalize import normalize_batch, normalize_text

PROSE = ("The company reported higher quarterly revenue and said demand for its products "
         "remained strong across all regions during the period.")  # 136 chars, 20 words


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, address="local", include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


# ------------------------------------------------------------------ normalize

def test_nfc_composes_accents():
    decomposed = "Societe\u0301 Ge\u0301ne\u0301rale"
    assert normalize_text(decomposed) == "Societ\u00e9 G\u00e9n\u00e9rale"


def test_control_chars_removed_newline_and_tab_kept():
    assert normalize_text("a\x00b\x03c\x1bd\x7fe\u200bf") == "abcdef"
    assert normalize_text("col1\tcol2\nnext") == "col1\tcol2\nnext"
    assert normalize_text("one\r\ntwo\rthree") == "one\ntwo\nthree"


def test_whitespace_runs_collapse_but_paragraphs_stay():
    text = "  Net   income\u00a0\u00a0rose .  \n\n\n\n  Second   paragraph\t\t here \n"
    assert normalize_text(text) == "Net income rose .\n\nSecond paragraph\there"
    assert normalize_text("line one\nline two") == "line one\nline two"  # single newline kept


@pytest.mark.parametrize("text, expected", [
    ("Profit rose.\nReuter", "Profit rose."),
    ("Profit rose.\n REUTER \n", "Profit rose."),
    ("Note: period ended January 31. REUTER", "Note: period ended January 31."),
    ("TOTAL 14.7 16.0 15.8 REUTER", "TOTAL 14.7 16.0 15.8"),
    ("He told Reuters", "He told Reuters"),  # a mention, not a sign-off
    ("Reuters reported a rise.", "Reuters reported a rise."),
])
def test_reuter_signoff(text, expected):
    assert normalize_text(text) == expected


def test_page_boilerplate_lines():
    text = "Revenue grew.\n30\nTable of Contents\nCosts fell.\nPage 4 of 90\n- 5 -\nTotal\n30\n12"
    # footer number above "Table of Contents" goes; bare numbers elsewhere are table cells and stay
    assert normalize_text(text) == "Revenue grew.\nCosts fell.\nTotal\n30\n12"


def test_normalize_is_idempotent_and_batch_updates_bytes():
    messy = "Caf\u0065\u0301 \x07 price\u00a0rose\n\n\n\nTable of Contents\nsaid. REUTER"
    once = normalize_text(messy)
    assert normalize_text(once) == once
    out = normalize_batch({"id": np.array(["a"]), "text": np.array([messy], dtype=object), "bytes": np.array([99])})
    assert out["text"][0] == once and out["bytes"][0] == len(once.encode("utf-8")) and out["id"][0] == "a"


# ------------------------------------------------------------------ filters, rule by rule

def test_prose_passes_every_default_rule():
    assert drop_reason(PROSE, FilterConfig()) == ""


def _only(rule: str, threshold) -> FilterConfig:
    """A config with only ``rule`` on, so a hit can only come from it."""
    return FilterConfig(**{name: (threshold if name == rule else None) for name in RULE_ORDER})


@pytest.mark.parametrize("rule, threshold, miss, hit", [
    ("min_chars", 10, "abcdefghij", "abcdefghi"),                       # 10 chars kept, 9 dropped
    ("max_chars", 10, "abcdefghij", "abcdefghijk"),
    ("min_words", 3, "one two three", "one two"),
    ("max_dup_line_ratio", 0.5, "aaaa\nbbbb\naaaa\nbbbb", "aaaa\naaaa\naaaa\naaaa"),  # 0.5 kept, 0.75 dropped
    ("max_digit_ratio", 0.5, "ab12", "a123"),                             # 0.5 kept, 0.75 dropped
    ("max_symbol_ratio", 0.25, "abc$", "ab$#"),                           # 0.25 kept, 0.5 dropped
    ("min_alpha_ratio", 0.5, "ab12", "a123"),
])
def test_rule_boundaries(rule, threshold, miss, hit):
    config = _only(rule, threshold)
    assert drop_reason(miss, config) == ""
    assert drop_reason(hit, config) == rule


def test_stats_ignore_whitespace_and_sentence_punctuation():
    s = doc_stats("A, b. (c)!\n\n  d?")
    assert s["symbol_ratio"] == 0 and s["alpha_ratio"] == pytest.approx(4 / 10)
    assert doc_stats("x\n$\n$\n$")["dup_line_ratio"] == pytest.approx(2 / 4)  # by characters


def test_pure_number_table_dropped_filing_prose_kept():
    table = "\n".join(["Revenue", "$", "1,234.5", "$", "1,101.2", "2023", "2022", "12.1 %", "(45.6)"] * 6)
    filing = PROSE + "\nRevenue\n$\n1,234\n$\n1,101\n" + PROSE.replace("quarterly", "annual")
    assert drop_reason(table, FilterConfig()) == "max_dup_line_ratio"  # repeated rows win by order
    assert drop_reason("\n".join(f"{i * 7919 % 10000}.{i % 100:02d}" for i in range(40)), FilterConfig()) \
        == "max_digit_ratio"
    assert drop_reason(filing, FilterConfig()) == ""


def test_first_failing_rule_wins_in_fixed_order():
    text = "12 34"  # too short, too few words, all digits
    assert drop_reason(text, FilterConfig()) == "min_chars"
    assert drop_reason(text, FilterConfig(min_chars=None)) == "min_words"
    assert drop_reason(text, FilterConfig(min_chars=None, min_words=None)) == "max_digit_ratio"
    assert RULE_ORDER.index("max_digit_ratio") < RULE_ORDER.index("min_alpha_ratio")


def test_config_is_strict():
    with pytest.raises(ValueError):
        FilterConfig(min_char=5)  # typo
    with pytest.raises(ValueError):
        FilterConfig(max_digit_ratio=1.5)


def test_apply_filters_batch_keeps_columns():
    batch = {"id": np.array(["a", "b"]), "text": np.array([PROSE, "short"], dtype=object)}
    out = apply_filters(batch)
    assert list(out["drop_reason"]) == ["", "min_chars"] and list(out["id"]) == ["a", "b"]


def test_counts_per_reason_with_ray(ray_local):
    docs = (
        [PROSE] * 3
        + ["tiny"] * 2
        + ["word " * 30 + "\n" + "12345 67890 " * 40]  # digits
        + ["$$$ ### @@@ " * 20 + "words are here but symbols dominate the line"]
    )
    ds = ray.data.from_items([{"id": str(i), "text": t} for i, t in enumerate(docs)], override_num_blocks=2)
    labelled = label_dataset(ds).materialize()
    assert count_by(labelled, "drop_reason") == {"": 3, "max_digit_ratio": 1, "max_symbol_ratio": 1, "min_chars": 2}
    kept = keep_passing(labelled)
    assert kept.count() == 3 and "drop_reason" not in kept.schema().names
