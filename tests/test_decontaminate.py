"""Decontamination against the real FLARE evaluation texts: 13-gram hits, 12-gram misses, modes."""
from __future__ import annotations

import pytest
import ray

from finadapt.data.decontaminate import (
    DecontamConfig, build_eval_index, decontaminate, mark_contamination, tokenize,
)
from finadapt.tasks import load_samples

FILLER_A = "Lorem ipsum dolor sit amet, consectetur adipiscing elit."
FILLER_B = "Sed do eiusmod tempor incididunt ut labore et dolore magna aliqua."


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, address="local", include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def index():
    return build_eval_index(DecontamConfig())


@pytest.fixture(scope="module")
def fpb_sample():
    """A real FPB test sentence of 25+ tokens (deterministic: the first one)."""
    return next(s for s in load_samples("fpb", "test") if len(tokenize(s.text)) >= 25)


def _ids(matches):
    return [m["eval_id"] for m in matches]


def test_index_covers_all_eval_sets(index):
    assert index.n == 13 and index.eval_texts > 3000
    assert {task for task, _ in index.refs} == {"fpb", "fiqasa", "headlines", "ner"}
    assert all(eid.split("-")[1] in ("valid", "test") for _, eid in index.refs)
    assert 0 < index.skipped_short < 300  # e.g. NER's "Lender"


def test_verbatim_fpb_test_sentence_flagged_with_its_id(index, fpb_sample):
    doc = f"{FILLER_A} {fpb_sample.text} {FILLER_B}"
    matches = index.matches(doc, limit=5)
    assert fpb_sample.id in _ids(matches)
    hit = next(m for m in matches if m["eval_id"] == fpb_sample.id)
    assert hit["task"] == "fpb" and len(hit["ngram"].split()) == 13
    assert hit["ngram"] in " ".join(tokenize(fpb_sample.text))


def test_13_shared_words_flagged_12_not(index, fpb_sample):
    tokens = fpb_sample.text.split()  # FPB is pre-tokenized: words are space-separated
    words = tokenize(fpb_sample.text)
    assert len(words) == len(tokenize(" ".join(tokens)))
    twelve = " ".join(words[4:16])
    thirteen = " ".join(words[4:17])
    assert index.matches(f"{FILLER_A} {twelve} {FILLER_B}", limit=5) == []
    assert _ids(index.matches(f"{FILLER_A} {thirteen} {FILLER_B}", limit=5)) == [fpb_sample.id]


def test_case_and_punctuation_do_not_hide_a_match(index, fpb_sample):
    # FPB writes "company 's" / "EUR 1.5 mn ." ; the same text glued and upper-cased still matches
    glued = fpb_sample.text.replace(" 's", "'s").replace(" ,", ",").replace(" .", ".").upper()
    assert fpb_sample.id in _ids(index.matches(glued, limit=5))


def test_short_eval_texts_match_as_whole_runs_only():
    texts = [("headlines", "h-1", "gold prices climb to a six month high on weak dollar"),  # 11 tokens
             ("ner", "n-1", "Lender")]
    idx = build_eval_index(DecontamConfig(min_tokens=8), texts)
    assert idx.skipped_short == 1
    assert _ids(idx.matches("Today: Gold prices climb to a six-month high on weak dollar, traders said.", 5)) == ["h-1"]
    assert idx.matches("gold prices climb to a six month high on a weak dollar", 5) == []  # not contiguous
    assert idx.matches("The Lender agrees.", 5) == []


def _docs(fpb_sample):
    return ray.data.from_items([
        {"id": "clean-1", "text": f"{FILLER_A} {FILLER_B}", "source": "wiki", "domain": "general"},
        {"id": "dirty-1", "text": f"{FILLER_A} {fpb_sample.text}", "source": "reuters", "domain": "financial"},
        {"id": "clean-2", "text": "Quarterly revenue rose four percent.", "source": "reuters", "domain": "financial"},
    ], override_num_blocks=2)


def test_report_mode_keeps_and_reports(ray_local, index, fpb_sample):
    result = decontaminate(_docs(fpb_sample), DecontamConfig(mode="report", actors=1), index=index)
    rows = {r["id"]: r for r in result.dataset.take_all()}
    assert sorted(rows) == ["clean-1", "clean-2", "dirty-1"]
    assert rows["dirty-1"]["contaminated"] and not rows["clean-1"]["contaminated"]
    assert list(rows["clean-2"]["contamination"]) == []
    assert result.contaminated == 1 and result.by_task == {"fpb": 1}
    [entry] = result.report
    assert entry["id"] == "dirty-1" and entry["source"] == "reuters"
    assert fpb_sample.id in _ids(entry["matches"]) and all(m["ngram"] for m in entry["matches"])


def test_drop_mode_removes_flagged_docs(ray_local, index, fpb_sample):
    result = decontaminate(_docs(fpb_sample), DecontamConfig(mode="drop", actors=1), index=index)
    rows = result.dataset.take_all()
    assert sorted(r["id"] for r in rows) == ["clean-1", "clean-2"]
    assert set(rows[0]) == {"id", "text", "source", "domain"}
    assert result.contaminated == 1 and result.report[0]["id"] == "dirty-1"


def test_mark_is_lazy_and_adds_columns(ray_local, index, fpb_sample):
    marked = mark_contamination(_docs(fpb_sample), index, DecontamConfig(actors=1))
    flags = {r["id"]: r["contaminated"] for r in marked.take_all()}
    assert flags == {"clean-1": False, "dirty-1": True, "clean-2": False}
