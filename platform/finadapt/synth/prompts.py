"""Teacher prompts: a few real training examples (seeded per request) and a target label, asking
for one new example as a JSON object.

Every request carries chat `messages` (for chat APIs) and a `prefix`: the start of the JSON answer
with the target label already filled in. Engines that render the prompt themselves (hf, vllm,
openai completions) append the prefix after the chat template, so even a 135M teacher only has to
write the text; chat APIs get the messages alone and must write the whole object.
"""
from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from finadapt.tasks import Sample
from finadapt.tasks.ner import bio_entities
from finadapt.tasks.prompts import FIQASA_SOURCES, HEADLINE_QUESTIONS, NER_TYPES

SYSTEM = ("You write realistic, varied training examples for financial NLP tasks. "
          "Answer with one JSON object and nothing else.")

_CLASSIFICATION_TASKS = {
    "fpb": "a sentence from a financial news article (company results, deals, markets) whose sentiment "
           "for investors is {label}",
    "fiqasa": "a financial {source} (a microblog post or a news headline about a listed company) whose "
              "sentiment is {label}",
}
_HEADLINE_TASK = ("a news headline about gold commodities; for the question \"{question}\" the answer "
                  "must be {label}")
_NER_TASK = ("one short sentence (at most 30 words) from a financial agreement in a U.S. SEC filing that "
             "names at least one {etype} entity: first list the persons (PER), organizations (ORG) and "
             "locations (LOC), then write the sentence, using each entity exactly as listed")


@dataclass
class Request:
    """One call to the teacher: what to ask, what we asked for, and where its examples came from."""

    request_id: str
    task: str
    target: str            # label asked for (NER: the entity type that must occur)
    group: str             # FiQA-SA source / Headlines question column ("" otherwise)
    messages: list[dict]
    prefix: str
    seed_ids: list[str]
    prompt_hash: str
    prompt: str = ""       # chat template + prefix, filled in by render_prompts()
    seed: int = 0
    max_tokens: int = 160  # new-token budget of this request (set from the sampling config)

    def to_row(self) -> dict:
        row = asdict(self)
        row["messages"] = json.dumps(self.messages)  # Arrow-friendly; engines decode it
        return row


@dataclass
class TaskExamples:
    """Real training samples of one task, grouped the way targets are drawn."""

    task: str
    samples: list[Sample]
    by_label: dict[str, list[Sample]] = field(default_factory=dict)
    entities: list[list[tuple[str, str]]] = field(default_factory=list)  # NER: (text, type) per sample
    short_with_type: dict[str, list[Sample]] = field(default_factory=dict)  # NER: <= 40 tokens, has the type

    @classmethod
    def of(cls, task: str, samples: Sequence[Sample]) -> "TaskExamples":
        """Grouped once per run, not per request."""
        by_label: dict[str, list[Sample]] = {}
        for s in samples:
            by_label.setdefault(_label_of(s), []).append(s)
        out = cls(task, list(samples), by_label)
        if task == "ner":
            out.entities = [bio_entities(s.tokens, s.tags) for s in out.samples]
            for s, ents in zip(out.samples, out.entities):
                if len(s.tokens) <= 40:
                    for etype in dict.fromkeys(t for _, t in ents):
                        out.short_with_type.setdefault(etype, []).append(s)
        return out


def _label_of(sample: Sample) -> str:
    if sample.task == "ner":
        return "ner"
    return f"{sample.group}|{sample.answer}" if sample.task == "headlines" else sample.answer


def example_json(sample: Sample) -> str:
    """A real sample in the JSON shape the teacher must produce."""
    if sample.task == "ner":
        entities = [{"type": typ, "text": text} for text, typ in bio_entities(sample.tokens, sample.tags)]
        return json.dumps({"entities": entities, "text": sample.text}, ensure_ascii=False)
    return json.dumps({"label": sample.answer, "text": sample.text}, ensure_ascii=False)


def answer_prefix(task: str, target: str) -> str:
    """The start of the JSON answer, label filled in: the teacher continues with the text."""
    if task == "ner":  # entities first: a small teacher then writes a sentence that contains them
        return '{"entities": [{"type": "' + target + '", "text": "'
    return '{"label": "' + target + '", "text": "'


_JSON_TEXT = r'[^"\\\n]'  # a JSON string character the teacher may write (no quote, backslash, newline)


def continuation_regex(task: str, max_tokens: int = 96) -> str:
    """What may follow `answer_prefix` — for engines that constrain decoding (vLLM structured
    outputs): the answer is then always one closed JSON object. Lengths are capped in characters so
    the object fits in `max_tokens` (about 3 characters per token, entities included for NER)."""
    if task != "ner":
        return f"{_JSON_TEXT}{{8,{max(16, 3 * max_tokens - 20)}}}" + r'"\}'
    text = f"{_JSON_TEXT}{{8,{max(16, 3 * max_tokens // 2)}}}"
    entity = rf'\{{"type": "(PER|ORG|LOC)", "text": "{_JSON_TEXT}{{1,40}}"\}}'
    return rf'{_JSON_TEXT}{{1,40}}"\}}(, {entity}){{0,3}}\], "text": "{text}"\}}'


def _question(column: str) -> str:
    for col, display, hint in HEADLINE_QUESTIONS:
        if col == column:
            return f"{hint}? ({display})"
    raise ValueError(f"unknown headlines question {column!r}")


def _describe(task: str, target: str, group: str) -> str:
    if task in _CLASSIFICATION_TASKS:
        return _CLASSIFICATION_TASKS[task].format(label=target, source=group)
    if task == "headlines":
        return _HEADLINE_TASK.format(question=_question(group), label=target)
    if task == "ner":
        return _NER_TASK.format(etype=target)
    raise ValueError(f"no synthetic-data prompt for task {task!r}; supported: fpb, fiqasa, headlines, ner")


def _fields(task: str) -> str:
    if task == "ner":
        return '{"entities": [{"type": "PER|ORG|LOC", "text": "..."}], "text": "..."}'
    return '{"label": "...", "text": "..."}'


def draw_target(task: str, examples: TaskExamples, rng: random.Random, balance: str) -> tuple[str, str]:
    """(target label, group) for one request: uniform over labels, or following the real distribution."""
    if task == "ner":
        return rng.choice(NER_TYPES) if balance == "uniform" else _real_ner_type(examples, rng), ""
    keys = sorted(examples.by_label)
    if balance == "real":
        key = _label_of(rng.choice(examples.samples))
    elif task == "headlines":
        column = rng.choice([q[0] for q in HEADLINE_QUESTIONS])
        key = f"{column}|{rng.choice(['Yes', 'No'])}"
    else:
        key = rng.choice(keys)
    if task == "headlines":
        column, label = key.split("|")
        return label, column
    group = rng.choice(FIQASA_SOURCES) if task == "fiqasa" else ""
    return key, group


def _real_ner_type(examples: TaskExamples, rng: random.Random) -> str:
    for _ in range(50):
        ents = rng.choice(examples.entities)
        if ents:
            return rng.choice(ents)[1]
    return rng.choice(NER_TYPES)


def _shots(task: str, examples: TaskExamples, target: str, group: str, k: int,
           rng: random.Random) -> list[Sample]:
    """k real examples: about half with the target label (shows what is wanted), the rest any label."""
    if task == "ner":  # short sentences with the target type: they show a small teacher what to write
        pool_same = examples.short_with_type.get(target) or examples.samples
    else:
        key = f"{group}|{target}" if task == "headlines" else target
        pool_same = examples.by_label.get(key) or examples.samples
    same = rng.sample(pool_same, min(len(pool_same), (k + 1) // 2))
    chosen_ids = {s.id for s in same}
    rest = [s for s in rng.sample(examples.samples, min(len(examples.samples), 4 * k)) if s.id not in chosen_ids]
    shots = same + rest[: k - len(same)]
    rng.shuffle(shots)
    return shots


def build_request(task: str, examples: TaskExamples, index: int, seed: int, few_shot: int,
                  balance: str = "uniform") -> Request:
    """The `index`-th request of `task`: same (seed, task, index) -> same prompt, on any machine."""
    request_seed = int.from_bytes(hashlib.sha256(f"{seed}:{task}:{index}".encode()).digest()[:4], "little")
    rng = random.Random(request_seed)
    target, group = draw_target(task, examples, rng, balance)
    shots = _shots(task, examples, target, group, few_shot, rng)
    user = (
        f"Task: write {_describe(task, target, group)}.\n"
        f"Reply with one JSON object: {_fields(task)}\n"
        "Write a new example; do not copy the examples.\n\nExamples:\n"
        + "\n".join(example_json(s) for s in shots)
    )
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
    prefix = answer_prefix(task, target)
    digest = hashlib.sha256(json.dumps([messages, prefix]).encode()).hexdigest()[:16]
    return Request(request_id=f"{task}-{seed}-{index:06d}", task=task, target=target, group=group,
                   messages=messages, prefix=prefix, seed_ids=[s.id for s in shots], prompt_hash=digest,
                   seed=request_seed)


def build_requests(examples: dict[str, TaskExamples], counts: dict[str, int], seed: int, few_shot: int,
                   balance: str = "uniform") -> list[Request]:
    """All requests, task by task (deterministic order)."""
    out = []
    for task, count in counts.items():
        if task not in examples or not examples[task].samples:
            raise ValueError(f"task {task!r} has no real training examples to seed the teacher with")
        out.extend(build_request(task, examples[task], i, seed, few_shot, balance) for i in range(count))
    return out


def render_prompts(requests: list[Request], tokenizer, use_prefix: bool = True) -> None:
    """Fill `prompt`: the teacher's chat template (generation prompt on) plus the answer prefix."""
    for r in requests:
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True)
        else:  # base models: plain transcript
            text = "\n\n".join(m["content"] for m in r.messages) + "\n\nAnswer: "
        r.prompt = text + (r.prefix if use_prefix else "")
