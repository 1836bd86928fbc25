"""FLARE query builders: the exact prompt strings of PIXIU/FLARE (see shared/reference/flare_protocol.md).

The query is passed to the model verbatim (no chat wrapper here).
"""
from __future__ import annotations

FPB_CHOICES: tuple[str, ...] = ("positive", "neutral", "negative")
FIQASA_CHOICES: tuple[str, ...] = ("negative", "positive", "neutral")
HEADLINES_CHOICES: tuple[str, ...] = ("Yes", "No")
NER_TYPES: tuple[str, ...] = ("PER", "ORG", "LOC")

FPB_TEMPLATE = (
    "Analyze the sentiment of this statement extracted from a financial news article. "
    "Provide your answer as either negative, positive, or neutral.\nText: {text}\nAnswer:"
)
FIQASA_TEMPLATE = (
    "What is the sentiment of the following financial {source}: Positive, Negative, or Neutral?"
    "\nText: {text}\nAnswer:"
)
FIQASA_SOURCES: tuple[str, ...] = ("post", "headline")
# One of PIXIU's 10 headline templates, verbatim (the double period after the hint included).
HEADLINES_TEMPLATE = (
    "{hint}.. Does the news headline mention anything about a {display} in gold commodities? "
    "Please answer Yes or No.\nText: {text}\nAnswer:"
)
NER_TEMPLATE = (
    "In the sentences extracted from financial agreements in U.S. SEC filings, identify the named "
    "entities that represent a person ('PER'), an organization ('ORG'), or a location ('LOC'). "
    "The required answer format is: 'entity name, entity type'.\nText: {text}\nAnswer:"
)

# (column in the data, FLARE display name, hint sentence) in FLARE's question order.
HEADLINE_QUESTIONS: tuple[tuple[str, str, str], ...] = (
    ("price_or_not", "Price or Not", "Consider whether the headline mentions the price of gold"),
    ("price_up", "Direction Up", "Look for indications that the price of gold is increasing"),
    ("price_down", "Direction Down", "Look for indications that the price of gold is decreasing"),
    ("price_constant", "Direction Constant", "Look for indications that the price of gold is stable"),
    ("past_price", "PastPrice", "Consider whether the headline references past prices of gold"),
    ("future_price", "FuturePrice", "Look for any mention of future gold prices"),
    ("past_general", "PastNews", "Consider whether the headline discusses past events related to gold"),
    ("future_general", "FutureNews", "Look for any references to future events concerning gold"),
    ("asset_comparison", "Asset Comparision", "Consider if the headline compares gold with other assets"),
)
HEADLINE_COLUMNS: tuple[str, ...] = tuple(q[0] for q in HEADLINE_QUESTIONS)
_HEADLINE_BY_COLUMN = {q[0]: q for q in HEADLINE_QUESTIONS}


def fpb_query(text: str) -> str:
    """FPB sentiment prompt."""
    return FPB_TEMPLATE.format(text=text)


def fiqasa_query(text: str, source: str) -> str:
    """FiQA-SA prompt; `source` is "post" (microblog) or "headline"."""
    if source not in FIQASA_SOURCES:
        raise ValueError(f"FiQA-SA source must be one of {FIQASA_SOURCES}, got {source!r}")
    return FIQASA_TEMPLATE.format(source=source, text=text)


def headlines_query(text: str, column: str) -> str:
    """Headlines yes/no prompt for one question type (`column`, e.g. "price_up")."""
    try:
        _, display, hint = _HEADLINE_BY_COLUMN[column]
    except KeyError:
        raise ValueError(f"unknown headlines question {column!r}; expected one of {HEADLINE_COLUMNS}") from None
    return HEADLINES_TEMPLATE.format(hint=hint, display=display, text=text)


def ner_query(text: str) -> str:
    """FinNER prompt."""
    return NER_TEMPLATE.format(text=text)
