"""FLARE tasks: golden prompts, the split contract, manifest, determinism and data errors.

Runs on the real data in $FINADAPT_DATA_DIR (read-only); splits are materialized into pytest's
tmp_path via FINADAPT_CACHE_DIR so the real cache is never touched.
"""
from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict

import pytest
from rapidfuzz import fuzz, process

from finadapt import paths
from finadapt.tasks import TASK_NAMES, DataFormatError, get_task, load_samples, materialize_all, read_jsonl
from finadapt.tasks import fiqasa, ner
from finadapt.tasks.definition import normalize_lower, normalize_text
from finadapt.tasks.materialize import SEED, data_fingerprint, file_sha256, load_manifest
from finadapt.tasks.prompts import HEADLINE_QUESTIONS, headlines_query

DATA = paths.data_dir()
pytestmark = pytest.mark.skipif(not (DATA / "fpb").is_dir(), reason=f"real data not found in {DATA}")


@pytest.fixture(scope="module")
def splits_dir(tmp_path_factory):
    """Materialize once into a private cache; FINADAPT_CACHE_DIR stays set for the whole module."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FINADAPT_CACHE_DIR", str(cache))
        out = materialize_all()
        yield out


@pytest.fixture(scope="module")
def samples(splits_dir):
    return {t: {s: load_samples(t, s) for s in ("train", "valid", "test")} for t in TASK_NAMES}


def _raw(rel: str) -> list[dict]:
    return [rec for _, rec in read_jsonl(DATA / rel)]


# ---------------------------------------------------------------- golden prompts (exact strings)

def test_fpb_golden_prompt(samples):
    s = samples["fpb"]["valid"][0]
    assert s.id == "fpb-valid-00000"
    assert s.query == (
        "Analyze the sentiment of this statement extracted from a financial news article. Provide your "
        "answer as either negative, positive, or neutral.\nText: On 25 August 2009 , Sampo 's stake in "
        "Nordea was 19.45 % .\nAnswer:"
    )
    assert (s.answer, s.gold, s.choices, s.flare_exact) == ("neutral", 1, ["positive", "neutral", "negative"], True)


def test_fiqasa_golden_prompts(samples):
    post, headline = samples["fiqasa"]["test"][0], samples["fiqasa"]["test"][1]
    assert post.query == (
        "What is the sentiment of the following financial post: Positive, Negative, or Neutral?\n"
        "Text: $BBRY Actually lost .03c per share if U incl VZ as no debt and 3.1 in Cash.\nAnswer:"
    )
    assert headline.query == (
        "What is the sentiment of the following financial headline: Positive, Negative, or Neutral?\n"
        "Text: Legal & General share price: Finance chief to step down\nAnswer:"
    )
    assert (post.group, headline.group) == ("post", "headline")
    assert post.choices == ["negative", "positive", "neutral"] and post.answer == "negative" and post.gold == 0


def test_headlines_golden_prompt(samples):
    rows = [s for split in samples["headlines"].values() for s in split
            if s.text == "gold futures edge lower, but hold above $630"]
    by_group = {s.group: s for s in rows}
    assert len(rows) == 9 and set(by_group) == {q[0] for q in HEADLINE_QUESTIONS}
    down = by_group["price_down"]
    assert down.query == (
        "Look for indications that the price of gold is decreasing.. Does the news headline mention "
        "anything about a Direction Down in gold commodities? Please answer Yes or No.\n"
        "Text: gold futures edge lower, but hold above $630\nAnswer:"
    )
    assert (down.answer, down.gold, down.choices) == ("Yes", 0, ["Yes", "No"])
    assert (by_group["price_up"].answer, by_group["price_up"].gold) == ("No", 1)
    assert by_group["asset_comparison"].query.startswith(
        "Consider if the headline compares gold with other assets.. Does the news headline mention "
        "anything about a Asset Comparision in gold commodities?")


def test_ner_golden_prompt(samples):
    s = samples["ner"]["test"][0]
    text = ("Subordinated Loan Agreement - Silicium de Provence SAS and Evergreen Solar Inc . 7 - December "
            "2007 [ HERBERT SMITH LOGO ] ................................ 2007 SILICIUM DE PROVENCE SAS and "
            "EVERGREEN SOLAR , INC .")
    assert s.query == (
        "In the sentences extracted from financial agreements in U.S. SEC filings, identify the named "
        "entities that represent a person ('PER'), an organization ('ORG'), or a location ('LOC'). The "
        f"required answer format is: 'entity name, entity type'.\nText: {text}\nAnswer:"
    )
    assert s.answer == ("Silicium de Provence SAS, ORG\nEvergreen Solar Inc, ORG\nHERBERT SMITH, PER\n"
                        "SILICIUM DE PROVENCE SAS, ORG\nEVERGREEN SOLAR, ORG")
    assert (s.gold, s.choices, s.flare_exact) == (-1, [], True)
    assert s.text == " ".join(s.tokens) and len(s.tokens) == len(s.tags)


def test_ner_answers_match_pixiu(samples):
    """Our answer built from BIO tags equals PIXIU's own answer for every FLARE row."""
    for split, rel in (("test", ner.TEST_FILE), ("valid", ner.VALID_FILE)):
        assert [s.answer for s in samples["ner"][split]] == [r["answer"] for r in _raw(rel)]


def test_headlines_template_is_pixius(samples):
    """Our headline query is verbatim one of PIXIU's templates: every PIXIU row that used that
    template, for every question type, equals our query for that headline and carries our answer."""
    ours = {s.query: s.answer for split in samples["headlines"].values() for s in split}
    marker = "Does the news headline mention anything about a"
    hint_of = {q[2]: q for q in HEADLINE_QUESTIONS}
    matched: Counter = Counter()
    seen = 0
    for _, rec in read_jsonl(DATA / "headlines/pixiu_fit_valid.jsonl.gz"):
        human, agent = rec["conversations"][0]["value"], rec["conversations"][1]["value"]
        hint = human.split("..", 1)[0]
        assert hint in hint_of, f"unknown hint in PIXIU row {rec['id']}: {hint!r}"
        if marker not in human:
            continue
        seen += 1
        text = human.split("\nText: ", 1)[1].rsplit("\nAnswer:", 1)[0]
        column = hint_of[hint][0]
        assert human == headlines_query(text, column)
        if human in ours:
            assert ours[human] == agent, rec["id"]
            matched[column] += 1
    assert seen > 500
    assert set(matched) == {q[0] for q in HEADLINE_QUESTIONS}  # every question type seen verbatim
    assert sum(matched.values()) >= 0.95 * seen  # all but merged duplicates / decontaminated train rows


# ---------------------------------------------------------------- split contract

def test_split_sizes(samples, splits_dir):
    n = {t: {s: len(v) for s, v in d.items()} for t, d in samples.items()}
    assert n["fpb"]["valid"] == 774 and n["fpb"]["test"] == 970
    notes = load_manifest()["tasks"]
    fpb_notes = notes["fpb"]["notes"]
    assert fpb_notes["removed_matching_valid"] >= 774
    assert n["fpb"]["train"] == fpb_notes["rest_after_removal"] - 970 > 3000
    assert n["fiqasa"]["valid"] == 188 and n["fiqasa"]["test"] == 235
    # FLARE's 750 train rows minus the ones whose sentence also sits in valid/test.
    removed = notes["fiqasa"]["notes"]["train_rows_removed_text_in_valid_or_test"]
    assert 0 < removed < 50 and n["fiqasa"]["train"] == 750 - removed
    assert n["ner"]["test"] == 98 and n["ner"]["valid"] == 103
    assert n["ner"]["train"] == 1164 - notes["ner"]["notes"]["train_removed_text_in_valid_or_test"]
    assert 1000 < n["ner"]["train"] < 1164
    per = notes["headlines"]["notes"]["headlines_per_split"]
    assert sum(per.values()) == 1120 and per["test"] == 560 and per["valid"] == 224
    assert n["headlines"]["test"] == 9 * 560 and n["headlines"]["valid"] == 9 * 224
    assert n["headlines"]["train"] > 9 * 300 + 4 * 9000


def test_flare_exact_flags(samples):
    for task, splits in samples.items():
        exact = set(get_task(task).flare_exact_splits)
        for split, rows in splits.items():
            assert all(s.flare_exact == (split in exact) for s in rows), (task, split)
    assert get_task("fpb").flare_exact_splits == ("valid",)
    assert get_task("headlines").flare_exact_splits == ()


def test_headlines_questions_per_headline(samples):
    order = [q[0] for q in HEADLINE_QUESTIONS]
    for split in ("test", "valid"):
        groups = defaultdict(list)
        for s in samples["headlines"][split]:
            groups[s.text].append(s.group)
        assert all(g == order for g in groups.values()), split
    kaggle = [s for s in samples["headlines"]["train"] if "-kaggle" in s.id]
    by_text = defaultdict(list)
    for s in kaggle:
        by_text[s.id.rsplit("-", 1)[0]].append(s.group)
    assert set(map(tuple, by_text.values())) == {("price_up", "price_down", "price_constant", "asset_comparison")}
    # Gold coding: 0 = Yes.
    assert all((s.answer == "Yes") == (s.gold == 0) for s in samples["headlines"]["test"])


def test_no_train_text_in_valid_or_test(samples):
    for task, splits in samples.items():
        eval_keys = {normalize_lower(s.text) for sp in ("valid", "test") for s in splits[sp]}
        leaked = [s.id for s in splits["train"] if normalize_lower(s.text) in eval_keys]
        assert not leaked, (task, leaked[:3])
    # FPB: test and valid are disjoint too (test is drawn from the rest).
    fpb_valid = {normalize_text(s.text) for s in samples["fpb"]["valid"]}
    assert not fpb_valid & {normalize_text(s.text) for s in samples["fpb"]["test"]}


def test_headlines_train_has_no_near_duplicates_of_eval(samples):
    eval_keys = sorted({normalize_lower(s.text) for sp in ("valid", "test") for s in samples["headlines"][sp]})
    train_keys = sorted({normalize_lower(s.text) for s in samples["headlines"]["train"]})
    scores = process.cdist(train_keys, eval_keys, scorer=fuzz.ratio, score_cutoff=95, workers=-1)
    assert scores.max() < 95
    notes = load_manifest()["tasks"]["headlines"]["notes"]
    assert notes["kaggle_removed_matching_valid_or_test"] == (
        notes["kaggle_removed_exact_match_valid_or_test"] + notes["kaggle_removed_near_match_valid_or_test"])
    assert notes["kaggle_removed_near_match_valid_or_test"] > 0
    assert notes["kaggle_removed_exact_match_valid_or_test"] > 500


def test_ids_unique_and_stable(samples):
    for task, splits in samples.items():
        ids = [s.id for rows in splits.values() for s in rows]
        assert len(ids) == len(set(ids)), task
        assert all(i.startswith(f"{task}-") for i in ids)
    assert samples["headlines"]["test"][0].id.endswith("-price_or_not")


def test_fiqasa_label_agrees_with_score(samples):
    for split in ("train", "valid", "test"):
        raw = _raw(fiqasa.SPLIT_FILES[split])
        for s in samples["fiqasa"][split]:
            rec = raw[int(s.id.rsplit("-", 1)[1])]
            assert rec["text"] == s.text and rec["label"].lower() == s.answer
            expected = "negative" if rec["score"] < -0.1 else "neutral" if rec["score"] < 0.1 else "positive"
            assert s.answer == expected and s.choices[s.gold] == expected


def test_fiqasa_label_score_mismatch_is_rejected(tmp_path):
    d = tmp_path / "fiqa_sa"
    d.mkdir()
    bad = {"id": "x", "text": "Shares soar", "score": 0.8, "source": "headline", "label": "Negative"}
    with gzip.open(d / "flare_split_test.jsonl.gz", "wt") as f:
        f.write(json.dumps({**bad, "label": "Positive"}) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataFormatError, match=r"flare_split_test\.jsonl\.gz: line 2: .*disagrees with score"):
        fiqasa._read_split(tmp_path, "test")


def test_fpb_test_is_seeded_sample_of_rest(samples):
    raw = _raw("fpb/sentences_50agree.jsonl.gz")
    for s in samples["fpb"]["test"][:50] + samples["fpb"]["train"][:50]:
        rec = raw[int(s.id.rsplit("-", 1)[1])]
        assert (rec["text"], rec["label"]) == (s.text, s.answer)
    assert Counter(s.answer for s in samples["fpb"]["test"]).keys() == {"positive", "neutral", "negative"}


def test_io_to_bio_hand_case():
    tags = ["O", "I-ORG", "I-ORG", "I-PER", "O", "I-LOC", "I-MISC", "I-LOC", "B-PER", "I-PER", "I-PER"]
    assert ner.io_to_bio(tags) == ["O", "B-ORG", "I-ORG", "B-PER", "O", "B-LOC", "O", "B-LOC", "B-PER", "I-PER", "I-PER"]
    tokens = ["the", "Acme", "Corp", "Smith", "of", "Boston", "X", "Paris", "Jo", "Ann", "Lee"]
    assert ner.entities_answer(tokens, ner.io_to_bio(tags)) == (
        "Acme Corp, ORG\nSmith, PER\nBoston, LOC\nParis, LOC\nJo Ann Lee, PER")


def test_ner_train_is_bio_without_misc(samples):
    allowed = {"O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"}
    for s in samples["ner"]["train"]:
        assert set(s.tags) <= allowed
        assert all(not (t.startswith("I-") and (i == 0 or s.tags[i - 1][2:] != t[2:])) for i, t in enumerate(s.tags))
    first = samples["ner"]["train"][0]
    assert first.tags[12:17] == ["B-ORG", "I-ORG", "I-ORG", "O", "B-ORG"]  # SILICON VALLEY BANK (" Bank
    assert first.answer.startswith("SILICON VALLEY BANK, ORG\nBank, ORG\nCalifornia, LOC\n")


# ---------------------------------------------------------------- manifest, cache, determinism

def test_manifest(splits_dir, samples):
    assert splits_dir.parent.name == "splits" and splits_dir.name == data_fingerprint()
    m = json.loads((splits_dir / "manifest.json").read_text())
    assert m["seed"] == SEED == 42 and m["data_fingerprint"] == splits_dir.name
    assert m["code_version"]["finadapt"] and m["code_version"]["split_code_sha256"]
    for rel, info in m["source_files"].items():
        assert info["sha256"] == file_sha256(DATA / rel)
    lic = {t: m["tasks"][t]["license"] for t in TASK_NAMES}
    assert lic["fpb"].startswith("CC BY-NC-SA 3.0") and lic["ner"].startswith("CC BY 3.0")
    assert "research-only" in lic["fiqasa"] and "research-only" in lic["headlines"]
    for t in TASK_NAMES:
        for split, info in m["tasks"][t]["splits"].items():
            assert (splits_dir / t / f"{split}.jsonl").is_file()
            assert info["count"] == len(samples[t][split])
            assert info["flare_exact"] == sum(s.flare_exact for s in samples[t][split])
    assert m["tasks"]["fpb"]["splits"]["valid"]["label_distribution"] == {"positive": 226, "neutral": 452, "negative": 96}
    assert m["tasks"]["headlines"]["splits"]["test"]["label_distribution"]["price_or_not"]["Yes"] > 0


def test_materialization_is_deterministic(splits_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FINADAPT_CACHE_DIR", str(tmp_path))
    again = materialize_all()
    assert again != splits_dir and again.name == splits_dir.name
    files = sorted(p.relative_to(splits_dir) for p in splits_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (splits_dir / rel).read_bytes() == (again / rel).read_bytes(), rel
    # A second call reuses the materialization (no rewrite).
    mtime = (again / "manifest.json").stat().st_mtime_ns
    assert materialize_all() == again and (again / "manifest.json").stat().st_mtime_ns == mtime


def test_task_registry_and_limit(splits_dir):
    assert TASK_NAMES == ("fpb", "fiqasa", "headlines", "ner")
    assert get_task("fpb").choices == ("positive", "neutral", "negative")
    assert get_task("fiqasa").choices == ("negative", "positive", "neutral")
    assert get_task("headlines").choices == ("Yes", "No") and get_task("ner").kind == "ner"
    assert [s.id for s in load_samples("fpb", "test", limit=3)] == [s.id for s in load_samples("fpb", "test")[:3]]
    with pytest.raises(KeyError, match="unknown task 'nope'"):
        get_task("nope")
    with pytest.raises(ValueError, match="unknown split"):
        load_samples("fpb", "dev")


# ---------------------------------------------------------------- data errors

def test_corrupted_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "broken.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write('{"text": "a", "label": "neutral"}\n{"text": "b", "label": "positive"}\n{"text": "c", "lab\n')
    with pytest.raises(DataFormatError) as info:
        list(read_jsonl(path))
    msg = str(info.value)
    assert str(path) in msg and "line 3" in msg and "invalid JSON" in msg
    assert isinstance(info.value, ValueError)


def test_corrupted_task_file_fails_the_loader(tmp_path):
    d = tmp_path / "finner"
    d.mkdir()
    with gzip.open(d / "pixiu_split_test.jsonl.gz", "wt") as f:
        f.write(json.dumps({"tokens": ["A"], "tags": ["B-PER"]}) + "\n{broken\n")
    with pytest.raises(DataFormatError, match=r"pixiu_split_test\.jsonl\.gz: line 2"):
        ner._read_pixiu(tmp_path, ner.TEST_FILE, "test")


def test_missing_data_dir_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FINADAPT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FINADAPT_DATA_DIR", str(tmp_path / "no-such-data"))
    with pytest.raises(FileNotFoundError, match=r"no-such-data.*FINADAPT_DATA_DIR"):
        load_samples("fpb", "test")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty/.*\.jsonl\.gz.*FINADAPT_DATA_DIR"):
        materialize_all(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="FINADAPT_DATA_DIR"):
        read_jsonl(tmp_path / "missing.jsonl")
