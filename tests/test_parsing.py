"""Golden cases for the FLARE-compatible and robust generation parsers."""
from __future__ import annotations

import pytest

from finadapt.evaluate.parsing import (
    parse_choice_compat,
    parse_choice_robust,
    parse_generation,
    parse_ner_compat,
    parse_ner_robust,
    parse_yes_no_compat,
    parse_yes_no_robust,
)

FPB = ["positive", "neutral", "negative"]  # FLARE's FPB order
FIQA = ["negative", "positive", "neutral"]  # FLARE's FiQA-SA order


# --------------------------------------------------------------------------- classification
@pytest.mark.parametrize("fn", [parse_choice_compat, parse_choice_robust])
def test_choice_simple_answers(fn):
    assert fn("Positive.", FPB) == 0
    assert fn("  neutral\n", FPB) == 1
    assert fn("NEGATIVE", FPB) == 2
    assert fn("Neutral", FIQA) == 2
    assert fn("", FPB) is None
    assert fn("I cannot tell.", FPB) is None


def test_choice_compat_follows_choices_order_not_text_order():
    gen = "I think it is negative but maybe positive"
    assert parse_choice_compat(gen, FPB) == 0  # positive is first in FPB's choices
    assert parse_choice_compat(gen, FIQA) == 0  # negative is first in FiQA's choices


def test_choice_robust_takes_earliest_mention():
    gen = "I think it is negative but maybe positive"
    assert parse_choice_robust(gen, FPB) == 2
    assert parse_choice_robust("Positive, not negative", FIQA) == 1


def test_choice_substring_vs_word_boundary():
    gen = "a nonnegative outlook"
    assert parse_choice_compat(gen, FPB) == 2  # FLARE substring rule
    assert parse_choice_robust(gen, FPB) is None  # not the word "negative"


# --------------------------------------------------------------------------- headlines
@pytest.mark.parametrize(
    "gen, compat, robust",
    [
        ("Yes", 0, 0),
        (" Yes", 0, 0),  # stripped
        ("Yes\n", 0, 0),
        ("yes", 1, 0),  # compat is case-sensitive
        ("Yes.", 1, 0),  # compat needs the bare word
        ("YES, the price rises", 1, 0),
        ("No", 1, 1),
        ("no.", 1, 1),
        ("Maybe", 1, None),
        ("Yesterday the price fell", 1, None),
        ("", 1, None),
    ],
)
def test_yes_no(gen, compat, robust):
    assert parse_yes_no_compat(gen) == compat
    assert parse_yes_no_robust(gen) == robust


# --------------------------------------------------------------------------- NER
TOKENS = ["Apple", "Inc.", "hired", "John", "Smith", "in", "New", "York", "and", "Apple", "Inc.", "paid", "Bank"]
TEXT = " ".join(TOKENS)
GEN = "Apple Inc., ORG\nJohn Smith, PER\nNew York, LOC\nthis line is malformed\nBank, ORG\nJohn, MISC"
EXPECTED_NO_LAST = [
    "B-ORG", "I-ORG", "O", "B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "B-ORG", "I-ORG", "O", "O",
]


def test_ner_compat_multiword_repeated_malformed_and_quirk():
    # Apple Inc. labelled twice; malformed line and MISC ignored; Bank ends the sentence -> quirk.
    assert parse_ner_compat(GEN, TEXT, TOKENS) == EXPECTED_NO_LAST
    off = parse_ner_compat(GEN, TEXT, TOKENS, reproduce_last_token_quirk=False)
    assert off == EXPECTED_NO_LAST[:-1] + ["B-ORG"]


def test_ner_compat_quirk_hits_multiword_entity_at_end():
    tokens = ["Paid", "to", "Bank", "of", "America"]
    gen = "Bank of America, ORG"
    assert parse_ner_compat(gen, " ".join(tokens), tokens) == ["O"] * 5
    assert parse_ner_compat(gen, " ".join(tokens), tokens, reproduce_last_token_quirk=False) == [
        "O", "O", "B-ORG", "I-ORG", "I-ORG",
    ]


def test_ner_compat_is_strict_about_format():
    tokens = ["Apple", "Inc.", "hired", "John", "Smith", "."]
    text = " ".join(tokens)
    assert parse_ner_compat("apple inc., ORG", text, tokens) == ["O"] * 6  # case-sensitive
    assert parse_ner_compat("Apple Inc., org", text, tokens) == ["O"] * 6  # type case-sensitive
    assert parse_ner_compat("Apple Inc.,ORG", text, tokens) == ["O"] * 6  # needs ", "
    assert parse_ner_compat("- John Smith, PER", text, tokens) == ["O"] * 6  # bullet is part of entity
    assert parse_ner_compat("John Smith, PER ", text, tokens)[3:5] == ["B-PER", "I-PER"]  # type stripped
    assert parse_ner_compat("", text, tokens) == ["O"] * 6


def test_ner_compat_entity_containing_comma():
    tokens = ["Smith,", "John", "signed", "here"]
    assert parse_ner_compat("Smith, John, PER", " ".join(tokens), tokens) == ["B-PER", "I-PER", "O", "O"]


def test_ner_compat_tokens_default_to_text_split():
    assert parse_ner_compat("John, PER", "John paid .", []) == ["B-PER", "O", "O"]


def test_ner_robust_tolerates_format():
    gen = "\n".join([
        "- Apple Inc.: org",
        "* John Smith - PER",
        "1. New York ,LOC.",
        "Bank , Organization",
        "Here are the entities:",
        "John, MISC",
    ])
    assert parse_ner_robust(gen, TEXT, TOKENS) == EXPECTED_NO_LAST[:-1] + ["B-ORG"]


def test_ner_robust_case_fallback_and_type_first():
    tokens = ["Apple", "Inc.", "hired", "John", "Smith", "."]
    text = " ".join(tokens)
    assert parse_ner_robust("apple inc., ORG", text, tokens) == ["B-ORG", "I-ORG", "O", "O", "O", "O"]
    assert parse_ner_robust("PER: John Smith", text, tokens) == ["O", "O", "O", "B-PER", "I-PER", "O"]
    assert parse_ner_robust("John Smith (PER)", text, tokens) == ["O", "O", "O", "B-PER", "I-PER", "O"]
    assert parse_ner_robust("no entities found", text, tokens) == ["O"] * 6


# --------------------------------------------------------------------------- dispatcher
def test_parse_generation_dispatch():
    row = {"choices": FPB, "gold": 2, "text": "x", "tokens": [], "tags": []}
    gen = "negative but positive"
    assert parse_generation("classification", "compat", gen, row) == {"pred": 0, "pred_tags": []}
    assert parse_generation("classification", "robust", gen, row) == {"pred": 2, "pred_tags": []}
    assert parse_generation("classification", "robust", None, row)["pred"] is None

    hl = {"choices": ["Yes", "No"], "gold": 0, "text": "h", "group": "Price or Not"}
    assert parse_generation("headlines", "compat", "yes", hl)["pred"] == 1
    assert parse_generation("headlines", "robust", "yes", hl)["pred"] == 0
    assert parse_generation("headlines", "robust", "unsure", hl)["pred"] is None

    ner = {"choices": [], "gold": -1, "text": TEXT, "tokens": tuple(TOKENS), "tags": ["O"] * len(TOKENS)}
    out = parse_generation("ner", "compat", GEN, ner)
    assert out == {"pred": None, "pred_tags": EXPECTED_NO_LAST}
    assert parse_generation("ner", "robust", GEN, ner)["pred_tags"][-1] == "B-ORG"


def test_parse_generation_rejects_unknown():
    with pytest.raises(ValueError):
        parse_generation("regression", "compat", "1", {})
    with pytest.raises(ValueError):
        parse_generation("classification", "choice", "x", {"choices": FPB})
