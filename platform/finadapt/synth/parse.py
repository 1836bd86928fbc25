"""Teacher output -> a FLARE Sample, or the reason it cannot be one.

Only the first JSON object of the output counts (small teachers keep writing more examples after
it). Every failure has a reason code, so the quarantine file and the report say why a generation
was rejected.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from finadapt.tasks import Sample, get_task
from finadapt.tasks.ner import entities_answer
from finadapt.tasks.prompts import NER_TYPES, fiqasa_query, fpb_query, headlines_query, ner_query

# Reject reasons of the parse step (validate.py adds the corpus-level ones).
NO_JSON = "no_json"
TRUNCATED_JSON = "truncated_json"
INVALID_JSON = "invalid_json"
MISSING_FIELD = "missing_field"
LABEL_NOT_IN_SET = "label_not_in_set"
OFF_TARGET_LABEL = "off_target_label"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
ENTITY_NOT_IN_TEXT = "entity_not_in_text"
BAD_ENTITY_TYPE = "bad_entity_type"
MISSING_TARGET_ENTITY = "missing_target_entity"

_NER_TOKEN = re.compile(r"\w+(?:['&-]\w+)*|[^\w\s]")


class ParseReject(ValueError):
    """A generation that cannot become a sample; `reason` is a stable code, the message a detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclass
class ParsedGeneration:
    sample: Sample
    repaired: bool = False  # bare quotes inside the text were escaped before parsing


@dataclass
class LengthBounds:
    min_words: int = 4
    max_words: int = 80


def escape_inner_quotes(text: str) -> str:
    """Escape quotes inside JSON strings that small teachers leave bare (`"a "quoted" word"`): a quote
    inside a string ends it only when the next non-space character is , : } or ]."""
    out, in_string, i = [], False, 0
    while i < len(text):
        ch = text[i]
        if in_string and ch == "\\":
            out.append(text[i:i + 2])
            i += 2
            continue
        if ch == '"':
            if not in_string:
                in_string = True
            else:
                rest = text[i + 1:].lstrip()
                if not rest or rest[0] in ",:}]":
                    in_string = False
                else:
                    out.append('\\"')
                    i += 1
                    continue
        out.append(ch)
        i += 1
    return "".join(out)


def _with_quotes_escaped(line: str) -> dict | None:
    """The object `line` holds once bare inner quotes are escaped, or None if it still does not parse."""
    try:
        obj, _ = json.JSONDecoder().raw_decode(escape_inner_quotes(line))
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def first_json_object(text: str, truncated: bool = False) -> dict:
    """The first JSON object in `text` (code fences and trailing chatter ignored). Bare quotes inside
    strings are repaired (the object then carries `_repaired: True`)."""
    start = text.find("{")
    if start < 0:
        raise ParseReject(NO_JSON, "no '{' in the output")
    try:
        obj, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as err:
        repaired = _with_quotes_escaped(text[start:].split("\n", 1)[0])
        if repaired is not None:
            return {**repaired, "_repaired": True}
        unclosed = "}" not in text[start:] or err.msg.startswith("Unterminated string")
        if truncated or unclosed:
            raise ParseReject(TRUNCATED_JSON, f"JSON ends early ({err.msg} at char {err.pos})") from None
        raise ParseReject(INVALID_JSON, f"{err.msg} at char {err.pos}") from None
    if not isinstance(obj, dict):
        raise ParseReject(INVALID_JSON, f"first JSON value is a {type(obj).__name__}, not an object")
    return obj


def _text_field(obj: dict) -> str:
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ParseReject(MISSING_FIELD, "'text' missing, empty or not a string")
    return " ".join(text.split())


def _check_length(text: str, bounds: LengthBounds) -> None:
    words = len(text.split())
    if words < bounds.min_words:
        raise ParseReject(TOO_SHORT, f"{words} words < {bounds.min_words}")
    if words > bounds.max_words:
        raise ParseReject(TOO_LONG, f"{words} words > {bounds.max_words}")


def _label(obj: dict, choices: tuple[str, ...], target: str) -> str:
    """The task label the teacher wrote: one of `choices` exactly, after trimming surrounding
    whitespace and case-folding ("  Positive " -> positive). Anything else is not in the set, even
    text that contains a label ("not positive", "neutral/positive", "Yes.") or is part of one ("pos")."""
    raw = obj.get("label")
    if not isinstance(raw, str):
        raise ParseReject(MISSING_FIELD, "'label' missing or not a string")
    by_folded = {c.casefold(): c for c in choices}
    label = by_folded.get(raw.strip().casefold())
    if label is None:
        raise ParseReject(LABEL_NOT_IN_SET, f"label {raw!r} not in {list(choices)}")
    if label != target:
        raise ParseReject(OFF_TARGET_LABEL, f"label {label!r} but {target!r} was asked for")
    return label


def ner_tokens(text: str) -> list[str]:
    """FinNER-style tokens: words (inner ' & - kept) and single punctuation marks ("Inc." -> "Inc", ".")."""
    return _NER_TOKEN.findall(text)


def _occurrences(tokens: list[str], span: list[str]) -> list[int]:
    return [i for i in range(len(tokens) - len(span) + 1) if tokens[i:i + len(span)] == span]


def ner_tags(text: str, entities: object, target: str) -> tuple[list[str], list[str]]:
    """Tokens and BIO tags of `text` for the teacher's entity list; rejects invented entities.

    Every occurrence of a listed entity is tagged (as in FinNER); repeated list entries count once;
    longer entities win overlaps ("Bank of America" over "America")."""
    if not isinstance(entities, list):
        raise ParseReject(MISSING_FIELD, "'entities' missing or not a list")
    tokens = ner_tokens(text)
    tags = ["O"] * len(tokens)
    unique: dict[tuple[str, ...], str] = {}
    for ent in entities:
        if not isinstance(ent, dict) or not isinstance(ent.get("text"), str) or not isinstance(ent.get("type"), str):
            raise ParseReject(MISSING_FIELD, f"entity {ent!r} is not {{'text': str, 'type': str}}")
        etype = ent["type"].strip().upper()
        if etype not in NER_TYPES:
            raise ParseReject(BAD_ENTITY_TYPE, f"entity type {ent['type']!r} not in {list(NER_TYPES)}")
        span = tuple(ner_tokens(ent["text"]))
        if not span or not _occurrences(tokens, list(span)):
            raise ParseReject(ENTITY_NOT_IN_TEXT, f"entity {ent['text']!r} does not occur in the text")
        if unique.setdefault(span, etype) != etype:
            raise ParseReject(BAD_ENTITY_TYPE, f"entity {ent['text']!r} listed as {unique[span]} and {etype}")
    for span, etype in sorted(unique.items(), key=lambda kv: -len(kv[0])):
        for start in _occurrences(tokens, list(span)):
            if all(t == "O" for t in tags[start:start + len(span)]):
                tags[start:start + len(span)] = ["B-" + etype] + ["I-" + etype] * (len(span) - 1)
    if not any(t.endswith("-" + target) for t in tags):
        raise ParseReject(MISSING_TARGET_ENTITY, f"no {target} entity although one was asked for")
    return tokens, tags


def parse_generation(request: dict, output: str, truncated: bool = False,
                     bounds: LengthBounds | None = None, sample_id: str | None = None) -> ParsedGeneration:
    """A FLARE Sample from the teacher's `output` for `request` (a Request row), or ParseReject.

    `output` is the whole answer: the prefix the prompt ended with plus what the teacher wrote.
    """
    bounds = bounds or LengthBounds()
    task = request["task"]
    obj = first_json_object(output, truncated)
    repaired = bool(obj.pop("_repaired", False))
    text = _text_field(obj)
    _check_length(text, bounds)
    sample_id = sample_id or f"synth-{request['request_id']}"
    if task == "ner":
        tokens, tags = ner_tags(text, obj.get("entities"), request["target"])
        text = " ".join(tokens)
        return ParsedGeneration(Sample(id=sample_id, task=task, query=ner_query(text),
                                       answer=entities_answer(tokens, tags), choices=[], gold=-1, text=text,
                                       tokens=tokens, tags=tags), repaired)
    choices = get_task(task).choices
    label = _label(obj, choices, request["target"])
    group = request.get("group", "")
    if task == "fpb":
        query = fpb_query(text)
    elif task == "fiqasa":
        query = fiqasa_query(text, group)
    elif task == "headlines":
        query = headlines_query(text, group)
    else:
        raise ParseReject(MISSING_FIELD, f"no synthetic-data parser for task {task!r}")
    return ParsedGeneration(Sample(id=sample_id, task=task, query=query, answer=label, choices=list(choices),
                                   gold=choices.index(label), text=text, group=group), repaired)
