"""Turn a model's generated text into a prediction.

Two modes per task kind:

* ``compat`` reproduces FLARE/PIXIU's scoring rules so numbers compare with published ones
  (see ``shared/reference/flare_protocol.md``);
* ``robust`` tolerates harmless formatting (case, punctuation, bullets, separators) so that a
  model is not scored as wrong for answering correctly in a slightly different format.
"""
from __future__ import annotations

import re
import string
from typing import Any, Sequence

NER_TYPES: tuple[str, ...] = ("PER", "ORG", "LOC")
KINDS: tuple[str, ...] = ("classification", "headlines", "ner")
MODES: tuple[str, ...] = ("compat", "robust")

# Long type names a chatty model may write; robust mode maps them onto FLARE's codes.
_TYPE_ALIASES = {
    "PER": "PER", "PERSON": "PER",
    "ORG": "ORG", "ORGANIZATION": "ORG", "ORGANISATION": "ORG",
    "LOC": "LOC", "LOCATION": "LOC",
}
_TYPE_RE = r"\(?\s*(?P<type>[A-Za-z]+)\s*\)?"
_PUNCT_TAIL = r"[\s.,;:!?'\"`)\]]*"
# "entity <sep> TYPE" with sep in {",", ":", " - "} and any whitespace; greedy entity => last sep.
# "Apple Inc. (ORG)" is accepted too (the lookahead makes a bracketed type its own separator).
_ENT_TYPE_RE = re.compile(
    r"^(?P<ent>.+)(?:,|:|\s[-\u2013\u2014]|(?=\s\())\s*" + _TYPE_RE + _PUNCT_TAIL + r"$"
)
# "TYPE <sep> entity" (some models put the type first).
_TYPE_ENT_RE = re.compile(r"^" + _TYPE_RE + r"\s*(?:,|:|\s[-\u2013\u2014])\s*(?P<ent>.+)$")
_BULLET_RE = re.compile(r"^\s*(?:[-*\u2022]+\s+|\(?\d+[.)]\s+)")


# --------------------------------------------------------------------------- classification
def parse_choice_compat(generation: str, choices: Sequence[str]) -> int | None:
    """FLARE's FPB/FiQA-SA rule: first label *in choices order* that is a substring.

    Note the order dependence: "negative but positive" gives ``positive`` when
    ``positive`` comes first in ``choices`` (FPB), whatever the model said first.
    """
    text = (generation or "").lower().strip()
    for i, label in enumerate(choices):
        if str(label).lower() in text:
            return i
    return None


def parse_choice_robust(generation: str, choices: Sequence[str]) -> int | None:
    """Whole-word, case-insensitive label match; the label mentioned first wins.

    Word boundaries stop e.g. "nonnegative" from counting as "negative"; ties at the same
    position (a label that prefixes another) fall back to the longer label, then choices order.
    """
    text = generation or ""
    best: tuple[int, int, int] | None = None
    for i, label in enumerate(choices):
        m = re.search(r"\b" + re.escape(str(label)) + r"\b", text, flags=re.IGNORECASE)
        if m is not None:
            key = (m.start(), -len(str(label)), i)
            if best is None or key < best:
                best = key
    return None if best is None else best[2]


# --------------------------------------------------------------------------- headlines
def parse_yes_no_compat(generation: str) -> int:
    """FLARE's Headlines rule: Yes (0) only for exactly "Yes" after strip, anything else No (1)."""
    return 0 if (generation or "").strip() == "Yes" else 1


def parse_yes_no_robust(generation: str) -> int | None:
    """First word, case-insensitive, punctuation stripped: yes -> 0, no -> 1, else None (missing)."""
    words = (generation or "").split()
    if not words:
        return None
    first = words[0].strip(string.punctuation).lower()
    return {"yes": 0, "no": 1}.get(first)


# --------------------------------------------------------------------------- NER
def _find_all(tokens: Sequence[str], ent: Sequence[str], fold_case: bool = False) -> list[int]:
    """Start indices of every occurrence of the token sequence ``ent`` in ``tokens``."""
    k = len(ent)
    if k == 0 or k > len(tokens):
        return []
    if fold_case:
        tokens = [t.lower() for t in tokens]
        ent = [e.lower() for e in ent]
    ent = list(ent)
    return [i for i in range(len(tokens) - k + 1) if list(tokens[i:i + k]) == ent]


def _label(tags: list[str], start: int, length: int, etype: str) -> None:
    tags[start] = "B-" + etype
    for j in range(start + 1, start + length):
        tags[j] = "I-" + etype


def _tokens_of(text: str, tokens: Sequence[str] | None) -> list[str]:
    return [str(t) for t in tokens] if tokens is not None and len(tokens) else (text or "").split(" ")


def parse_ner_compat(
    generation: str,
    text: str,
    tokens: Sequence[str],
    reproduce_last_token_quirk: bool = True,
) -> list[str]:
    """FLARE's NER rule: lines ``entity name, TYPE`` mapped onto whitespace tokens as BIO tags.

    Each line is split on ``", "``: entity = all but the last piece re-joined, type = last
    piece stripped; lines without ``", "`` and types outside PER/ORG/LOC are ignored. Every
    exact, case-sensitive occurrence of the entity's token sequence in ``tokens`` is tagged
    B-TYPE, I-TYPE...; later lines overwrite earlier ones.

    Quirk (``reproduce_last_token_quirk``, on by default for comparability): PIXIU's
    ``process_text`` finds the end word as "the first word starting after the match"; for a
    match ending on the sentence's last token there is none, the StopIteration is swallowed and
    that occurrence is silently left as O. With the flag on we skip such matches too.
    """
    toks = _tokens_of(text, tokens)
    tags = ["O"] * len(toks)
    for line in (generation or "").split("\n"):
        pieces = line.split(", ")
        if len(pieces) < 2:
            continue
        etype = pieces[-1].strip()
        ent = ", ".join(pieces[:-1]).split()
        if etype not in NER_TYPES or not ent:
            continue
        for start in _find_all(toks, ent):
            if reproduce_last_token_quirk and start + len(ent) == len(toks):
                continue
            _label(tags, start, len(ent), etype)
    return tags


def _parse_ner_line_robust(line: str) -> tuple[str, str] | None:
    """(entity, TYPE) from one tolerant answer line, or None if it is not an entity line."""
    line = _BULLET_RE.sub("", line.strip()).strip()
    if not line:
        return None
    for pattern in (_ENT_TYPE_RE, _TYPE_ENT_RE):
        m = pattern.match(line)
        if m is None:
            continue
        etype = _TYPE_ALIASES.get(m.group("type").upper())
        ent = m.group("ent").strip().strip("\"'`*").strip()
        if etype is not None and ent:
            return ent, etype
    return None


def parse_ner_robust(generation: str, text: str, tokens: Sequence[str]) -> list[str]:
    """Tolerant NER parsing: any whitespace around ``,``/``:``/`` - ``, bullets, case-free type.

    Matching is case-sensitive first, falling back to case-insensitive when the exact
    spelling never occurs; there is no last-token quirk.
    """
    toks = _tokens_of(text, tokens)
    tags = ["O"] * len(toks)
    for line in (generation or "").split("\n"):
        parsed = _parse_ner_line_robust(line)
        if parsed is None:
            continue
        ent = parsed[0].split()
        starts = _find_all(toks, ent) or _find_all(toks, ent, fold_case=True)
        for start in starts:
            _label(tags, start, len(ent), parsed[1])
    return tags


# --------------------------------------------------------------------------- dispatcher
def _as_list(value: Any) -> list[str]:
    return [] if value is None else [str(v) for v in list(value)]


def parse_generation(sample_kind: str, mode: str, generation: str, sample: dict) -> dict:
    """Parse one generation for a row with the ``Sample`` fields.

    Returns ``{"pred": int | None, "pred_tags": list[str]}``; ``pred`` is None for a missing
    answer (and for NER, whose prediction is ``pred_tags``).
    """
    if sample_kind not in KINDS:
        raise ValueError(f"unknown task kind {sample_kind!r}; expected one of {KINDS}")
    if mode not in MODES:
        raise ValueError(f"unknown parse mode {mode!r}; expected one of {MODES}")
    generation = generation or ""
    robust = mode == "robust"
    if sample_kind == "classification":
        choices = _as_list(sample.get("choices"))
        fn = parse_choice_robust if robust else parse_choice_compat
        return {"pred": fn(generation, choices), "pred_tags": []}
    if sample_kind == "headlines":
        fn = parse_yes_no_robust if robust else parse_yes_no_compat
        return {"pred": fn(generation), "pred_tags": []}
    text = str(sample.get("text") or "")
    tokens = _as_list(sample.get("tokens"))
    tags = parse_ner_robust(generation, text, tokens) if robust else parse_ner_compat(generation, text, tokens)
    return {"pred": None, "pred_tags": tags}
