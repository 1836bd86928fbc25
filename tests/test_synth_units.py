"""Synthetic instructions without a model: prompts, parsing of good and broken teacher outputs,
corpus-level checks (near-copies, duplicates, eval overlap), mixing ratios, provenance fields."""
from __future__ import annotations

import json

import pytest

from finadapt.data.decontaminate import DecontamConfig, build_eval_index
from finadapt.synth import parse as P
from finadapt.synth.config import SynthConfig
from finadapt.tasks.mixing import MixError, mix_samples
from finadapt.synth.parse import LengthBounds, ParseReject, parse_generation
from finadapt.synth.pipeline import parse_all, provenance
from finadapt.synth.prompts import Request, TaskExamples, build_request, build_requests
from finadapt.synth.validate import (CONTAMINATED, DUPLICATE_SYNTHETIC, NEAR_COPY_OF_REAL, Reference,
                                     check_samples)
from finadapt.tasks import Sample, load_samples
from finadapt.tasks.prompts import fpb_query


def req(task="fpb", target="positive", group="", rid="r1"):
    return dict(task=task, target=target, group=group, request_id=rid)


def reason_of(request, output, truncated=False):
    with pytest.raises(ParseReject) as err:
        parse_generation(request, output, truncated)
    return err.value.reason


# ------------------------------------------------------------------ parsing
def test_good_classification_output_becomes_a_flare_sample():
    out = '{"label": "positive", "text": "Nokia raised its  full-year margin guidance."}\n{"label": ...'
    parsed = parse_generation(req(), out)
    s = parsed.sample
    assert (s.task, s.answer, s.gold, s.choices) == ("fpb", "positive", 0, ["positive", "neutral", "negative"])
    assert s.text == "Nokia raised its full-year margin guidance."
    assert s.query == fpb_query(s.text) and not parsed.repaired


def test_fiqasa_and_headlines_use_their_group_in_the_query():
    s = parse_generation(req("fiqasa", "negative", "post"), '{"label": "Negative", "text": "$AAPL dumping hard after the call"}').sample
    assert s.answer == "negative" and s.group == "post" and "financial post" in s.query
    h = parse_generation(req("headlines", "Yes", "price_up"), '{"label": "yes", "text": "Gold climbs to a two-week high"}').sample
    assert (h.answer, h.gold, h.group) == ("Yes", 0, "price_up") and "Direction Up" in h.query


@pytest.mark.parametrize("output, reason", [
    ("I am sorry, I cannot write that.", P.NO_JSON),
    ('{"label": "positive", "text": "Revenue rose 12 % in the quarter and the', P.TRUNCATED_JSON),
    ('{"label": "positive", "text": "Revenue rose", }', P.INVALID_JSON),
    ('["positive", "Revenue rose sharply in the quarter"]', P.NO_JSON),  # a list is not the object asked for
    ('{"label": "positive"}', P.MISSING_FIELD),
    ('{"label": "bullish", "text": "Revenue rose sharply in the quarter"}', P.LABEL_NOT_IN_SET),
    ('{"label": "negative", "text": "Revenue rose sharply in the quarter"}', P.OFF_TARGET_LABEL),
    ('{"label": "positive", "text": "Up."}', P.TOO_SHORT),
    ('{"label": "positive", "text": "' + "word " * 100 + '"}', P.TOO_LONG),
])
def test_broken_outputs_are_rejected_with_a_reason(output, reason):
    assert reason_of(req(), output) == reason


@pytest.mark.parametrize("task, target, label", [
    ("fpb", "positive", "not positive"),       # contains the target label, means the opposite
    ("fpb", "positive", "positive-ish"),
    ("fpb", "positive", "neutral/positive"),   # two labels: which one?
    ("fpb", "positive", "positive."),
    ("fpb", "positive", "'positive'"),
    ("fpb", "positive", "pos"),                # a prefix of a label is not the label
    ("fpb", "positive", ""),
    ("fiqasa", "negative", "slightly negative"),
    ("headlines", "Yes", "Yes."),
    ("headlines", "No", "Not sure"),
])
def test_labels_match_exactly_not_by_substring(task, target, label):
    """The label must be one of the task's labels after trimming and case-folding; text that merely
    contains (or is contained in) a label is rejected, so "not positive" never becomes positive."""
    group = {"fiqasa": "post", "headlines": "price_up"}.get(task, "")
    out = json.dumps({"label": label, "text": "Revenue rose sharply in the quarter"})
    assert reason_of(req(task, target, group), out) == P.LABEL_NOT_IN_SET


@pytest.mark.parametrize("task, target, label", [
    ("fpb", "positive", "positive"), ("fpb", "positive", "  Positive "), ("fpb", "positive", "POSITIVE"),
    ("headlines", "Yes", "yes"), ("headlines", "No", "NO"),
])
def test_labels_are_trimmed_and_case_folded(task, target, label):
    group = "price_up" if task == "headlines" else ""
    out = json.dumps({"label": label, "text": "Revenue rose sharply in the quarter"})
    assert parse_generation(req(task, target, group), out).sample.answer == target


def test_a_label_that_is_not_a_string_is_a_missing_field():
    out = json.dumps({"label": ["positive"], "text": "Revenue rose sharply in the quarter"})
    assert reason_of(req(), out) == P.MISSING_FIELD


def test_truncation_flag_from_the_engine_wins():
    assert reason_of(req(), '{"label": "positive", "text": "Revenue rose in the quar', truncated=True) == P.TRUNCATED_JSON


def test_bare_quotes_inside_the_text_are_repaired_and_flagged():
    parsed = parse_generation(req(), '{"label": "positive", "text": "The deal is a "game changer" for Fortum ."}')
    assert parsed.repaired and parsed.sample.text == 'The deal is a "game changer" for Fortum .'


def test_ner_entities_become_bio_tags_and_the_flare_answer():
    out = json.dumps({"text": "The Borrower, Acme Holdings Inc., is located in New York.",
                      "entities": [{"text": "Acme Holdings Inc.", "type": "ORG"}, {"text": "New York", "type": "LOC"}]})
    s = parse_generation(req("ner", "ORG"), out).sample
    assert s.gold == -1 and s.text == " ".join(s.tokens)
    assert s.answer == "Acme Holdings Inc ., ORG\nNew York, LOC"  # FinNER splits "Inc." like this
    assert s.tags[s.tokens.index("Acme")] == "B-ORG" and s.tags[s.tokens.index("York")] == "I-LOC"


@pytest.mark.parametrize("entities, reason", [
    ([{"text": "Goldman Sachs", "type": "ORG"}], P.ENTITY_NOT_IN_TEXT),   # hallucinated entity
    ([{"text": "Acme Corp", "type": "COMPANY"}], P.BAD_ENTITY_TYPE),
    ([{"text": "Acme Corp", "type": "ORG"}], P.MISSING_TARGET_ENTITY),   # PER was asked for
    ("Acme Corp, ORG", P.MISSING_FIELD),
])
def test_bad_ner_outputs_are_rejected(entities, reason):
    out = json.dumps({"text": "Acme Corp shall pay the Lender on demand.", "entities": entities})
    assert reason_of(req("ner", "ORG" if reason != P.MISSING_TARGET_ENTITY else "PER"), out) == reason


# ------------------------------------------------------------------ prompts
def _examples(task):
    return TaskExamples.of(task, load_samples(task, "train"))


def test_requests_are_deterministic_and_seeded_from_real_training_examples():
    ex = {t: _examples(t) for t in ("fpb", "ner")}
    a = build_requests(ex, {"fpb": 5, "ner": 3}, seed=7, few_shot=4)
    b = build_requests(ex, {"fpb": 5, "ner": 3}, seed=7, few_shot=4)
    c = build_requests(ex, {"fpb": 5, "ner": 3}, seed=8, few_shot=4)
    assert [r.prompt_hash for r in a] == [r.prompt_hash for r in b] != [r.prompt_hash for r in c]
    train_ids = {s.id for t in ex for s in ex[t].samples}
    for r in a:
        assert len(r.seed_ids) == 4 and set(r.seed_ids) <= train_ids
        assert r.prefix.startswith("{") and r.target in r.messages[1]["content"]
    assert {r.target for r in a if r.task == "ner"} <= {"PER", "ORG", "LOC"}


def test_uniform_balance_covers_every_label():
    ex = _examples("fpb")
    targets = [build_request("fpb", ex, i, 0, 2).target for i in range(60)]
    assert set(targets) == {"positive", "neutral", "negative"}
    assert min(targets.count(t) for t in set(targets)) >= 10


# ------------------------------------------------------------------ validation
def sample(task, text, sid, answer="positive"):
    return Sample(id=sid, task=task, query=fpb_query(text), answer=answer, choices=["positive", "neutral", "negative"],
                  gold=0, text=text)


@pytest.fixture
def reference():
    real = {"fpb": [sample("fpb", "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding period.", "fpb-train-1")]}
    evals = [("fpb", "fpb-test-9", "The board proposes a dividend of EUR 0.45 per share for the financial year 2009 to shareholders.")]
    index = build_eval_index(DecontamConfig(ngram=8), evals)
    return Reference.build(real, evals, index)


def test_near_copies_duplicates_and_eval_overlap_are_rejected(reference):
    samples = [
        sample("fpb", "Operating profit rose to EUR 13.2 mn from EUR 8.7 mn in the corresponding period.", "s0"),
        sample("fpb", "Sales of the paper division fell sharply in the third quarter.", "s1"),
        sample("fpb", "Sales of the paper division fell sharply in the third quarter!", "s2"),
        sample("fpb", "Analysts note the board proposes a dividend of EUR 0.45 per share for the year.", "s3"),
        sample("fpb", "The new CEO starts in March and will move the headquarters to Espoo.", "s4"),
    ]
    verdicts = check_samples(samples, reference)
    assert [v.reason for v in verdicts] == [NEAR_COPY_OF_REAL, "", DUPLICATE_SYNTHETIC, CONTAMINATED, ""]
    assert verdicts[0].nearest_real_id == "fpb-train-1" and verdicts[0].nearest_real_similarity >= 90
    assert "fpb-test-9" in verdicts[3].detail
    assert 0 < verdicts[4].nearest_real_similarity < 90


def test_thresholds_come_from_the_config(reference):
    s = [sample("fpb", "Operating profit rose to EUR 13.2 mn from EUR 8.7 mn in the corresponding period.", "s0")]
    assert check_samples(s, reference, near_copy_ratio=100.0)[0].reason == ""


# ------------------------------------------------------------------ mixing
def _pool(task, n, prefix):
    return [sample(task, f"{prefix} text {i}", f"{prefix}-{task}-{i}") for i in range(n)]


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 1.0, 1.5])
def test_mix_has_the_exact_ratio_per_task(ratio):
    real = _pool("fpb", 40, "real") + _pool("ner", 12, "real")
    synth = _pool("fpb", 100, "syn") + _pool("ner", 100, "syn")
    result = mix_samples(real, synth, ratio, seed=3)
    for task, n_real in (("fpb", 40), ("ner", 12)):
        rows = [s for s in result.samples if s.task == task]
        n_syn = sum(s.id.startswith("syn") for s in rows)
        assert n_syn == round(ratio * n_real) and len(rows) - n_syn == n_real
        assert result.per_task[task]["achieved_ratio"] == pytest.approx(n_syn / n_real)
    assert len({s.id for s in result.samples}) == len(result.samples)  # no sample twice


def test_mix_per_task_ratio_seeding_and_shortage():
    real, synth = _pool("fpb", 10, "real") + _pool("ner", 10, "real"), _pool("fpb", 30, "syn") + _pool("ner", 5, "syn")
    mixed = mix_samples(real, synth, {"fpb": 2.0, "ner": 0.0}, seed=1)
    assert mixed.per_task["fpb"]["synthetic"] == 20 and mixed.per_task["ner"]["synthetic"] == 0
    assert [s.id for s in mixed.samples] == [s.id for s in mix_samples(real, synth, {"fpb": 2.0, "ner": 0.0}, seed=1).samples]
    assert [s.id for s in mixed.samples] != [s.id for s in mix_samples(real, synth, {"fpb": 2.0, "ner": 0.0}, seed=2).samples]
    with pytest.raises(MixError, match="ner: ratio 1.0 x 10 real samples needs 10 synthetic samples, the synthetic data has 5"):
        mix_samples(real, synth, 1.0)
    capped = mix_samples(real, synth, 1.0, on_short="cap")
    assert capped.per_task["ner"]["synthetic"] == 5 and capped.per_task["ner"]["achieved_ratio"] == 0.5


# ------------------------------------------------------------------ provenance + quarantine
def test_parse_all_quarantines_with_reasons_and_provenance_has_every_field():
    cfg = SynthConfig()
    ex = {"fpb": _examples("fpb")}
    requests = build_requests(ex, {"fpb": 3}, seed=0, few_shot=3)
    r0 = requests[0]
    outputs = [
        dict(request_id=r0.request_id, output=r0.prefix + 'Quarterly sales at the Finnish unit grew by a third ."}',
             truncated=False, generated_tokens=12),
        dict(request_id=requests[1].request_id, output="garbage", truncated=False, generated_tokens=3),
    ]  # the third request got no output row
    parsed, rejected = parse_all(cfg, requests, outputs)
    assert [p[0].request_id for p in parsed] == [r0.request_id]
    assert {(q["request_id"], q["reason"]) for q in rejected} == {(requests[1].request_id, P.NO_JSON),
                                                                   (requests[2].request_id, "no_output")}
    assert all(q["detail"] and "seed_example_ids" in q for q in rejected)
    prov = provenance(cfg, r0, parsed[0][1], "rev123")
    for key in ("teacher", "teacher_revision", "engine", "engine_config", "sampling", "prompt_hash", "request_id",
                "request_seed", "run_seed", "seed_example_ids", "target", "generated_tokens", "created_at"):
        assert prov[key] not in (None, ""), key
    assert prov["prompt_hash"] == r0.prompt_hash and prov["seed_example_ids"] == r0.seed_ids
    assert prov["sampling"]["temperature"] == cfg.sampling.temperature


def test_config_rejects_unknown_engine_and_tasks():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        SynthConfig.model_validate({"engine": {"kind": "tgi"}})
    with pytest.raises(ValidationError):
        SynthConfig.model_validate({"tasks": ["fpb", "convfinqa"]})
    with pytest.raises(ValueError, match="not in tasks"):
        SynthConfig(tasks=["fpb"], task_requests={"ner": 3}).counts()


def test_ner_tags_every_occurrence_once_per_listed_entity():
    out = json.dumps({"entities": [{"type": "PER", "text": "Borrower"}, {"type": "PER", "text": "Borrower"},
                                   {"type": "ORG", "text": "Bank of America"}, {"type": "LOC", "text": "America"}],
                      "text": "Borrower shall repay Bank of America ; Borrower is in America ."})
    s = parse_generation(req("ner", "PER"), out).sample
    assert s.answer == "Borrower, PER\nBank of America, ORG\nBorrower, PER\nAmerica, LOC"
    clash = json.dumps({"entities": [{"type": "PER", "text": "Agent"}, {"type": "ORG", "text": "Agent"}],
                        "text": "The Agent shall notify the Lenders ."})
    assert reason_of(req("ner", "PER"), clash) == P.BAD_ENTITY_TYPE


def test_constrained_continuation_always_parses():
    """What the vLLM regex allows after the prefix is a closed JSON object the parser accepts."""
    import re

    from finadapt.synth.prompts import answer_prefix, continuation_regex

    cases = [("fpb", "negative", "Operating loss widened to EUR 2.1 mn from EUR 0.4 mn .\"}"),
             ("ner", "ORG", 'Acme Corp"}, {"type": "PER", "text": "John Smith"}], "text": "John Smith signed for Acme Corp ."}')]
    for task, target, continuation in cases:
        assert re.fullmatch(continuation_regex(task), continuation)
        parse_generation(req(task, target), answer_prefix(task, target) + continuation)
    assert not re.fullmatch(continuation_regex("fpb"), 'The "deal" closed ."}')
    assert not re.fullmatch(continuation_regex("fpb"), "Sales rose in the quarter and")  # no truncation
    with pytest.raises(ValueError, match="constrain needs use_prefix"):
        SynthConfig.model_validate({"engine": {"kind": "vllm", "constrain": True}, "use_prefix": False})


def test_diversity_measures():
    from finadapt.synth.report import distinct_n, self_similarity

    assert distinct_n(["a b c", "a b d"], 1) == pytest.approx(4 / 6)
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)
    assert self_similarity(["only one"]) is None
    assert self_similarity(["gold rises", "gold rises", "oil falls sharply"]) > 60
