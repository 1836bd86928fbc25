"""Hand-computed checks for the FLARE metrics, floors and bootstrap intervals."""
from __future__ import annotations

import time

import numpy as np
import pytest
from seqeval.metrics import f1_score as seqeval_f1
from sklearn.metrics import f1_score

from finadapt.evaluate.metrics import (
    bootstrap_ci,
    classification_metrics,
    headlines_avg_f1,
    headlines_metrics,
    majority_floor,
    ner_entity_f1,
    ner_metrics,
    task_metrics,
    weighted_f1,
)

# Classification example used throughout.
GOLD = [0, 0, 0, 1, 1, 2]
PRED = [0, 0, 1, 1, None, 2]
# class 0: tp=2, predicted=2, support=3 -> P=1,   R=2/3 -> F1 = 2*1*(2/3)/(1+2/3) = 0.8
# class 1: tp=1, predicted=2, support=2 -> P=1/2, R=1/2 -> F1 = 0.5
# class 2: tp=1, predicted=1, support=1 -> P=1,   R=1   -> F1 = 1.0
# the None is the sentinel -1: a false negative for class 1, a false positive for no class.
# weighted = (3*0.8 + 2*0.5 + 1*1.0) / 6 = 4.4/6 ; macro = (0.8 + 0.5 + 1.0)/3 = 2.3/3
# accuracy = 4/6 (rows 0, 1, 3, 5) ; missing_rate = 1/6

# Headlines example: two question types.
HL_GOLD = [0, 1, 1, 1, 1, 1]
HL_PRED = [0, 1, 1, 0, 1, None]
HL_GROUPS = ["A", "A", "A", "A", "B", "B"]
# A: gold [Y,N,N,N], pred [Y,N,N,Y]
#    Yes: tp=1, predicted=2, support=1 -> P=1/2, R=1   -> F1=2/3
#    No:  tp=2, predicted=2, support=3 -> P=1,   R=2/3 -> F1=0.8
#    weighted = (1*2/3 + 3*0.8)/4 = 23/30
# B: gold [N,N], pred [N,missing]
#    Yes: no support, no prediction -> weight 0 ; No: P=1, R=1/2 -> F1=2/3 ; weighted = 2/3
# avg_f1 = (23/30 + 2/3)/2 = 43/60


def test_classification_weighted_f1_by_hand():
    m = classification_metrics(GOLD, PRED, n_labels=3)
    assert m["f1_weighted"] == pytest.approx(4.4 / 6)
    assert m["f1_macro"] == pytest.approx(2.3 / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["missing_rate"] == pytest.approx(1 / 6)
    assert m["n"] == 6


def test_missing_counts_wrong_and_sentinel_is_not_a_label():
    m = classification_metrics([0, 1], [0, None], n_labels=2)
    # class 0: P=R=1 -> F1 1 ; class 1: recall 0 -> F1 0 ; weighted (1+0)/2
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["f1_weighted"] == pytest.approx(0.5)
    assert m["f1_macro"] == pytest.approx(0.5)  # would be 1/3 if -1 were averaged in
    assert m["missing_rate"] == pytest.approx(0.5)


def test_headlines_avg_over_two_groups_by_hand():
    m = headlines_metrics(HL_GOLD, HL_PRED, HL_GROUPS)
    assert m["per_type"]["A"] == pytest.approx(23 / 30)
    assert m["per_type"]["B"] == pytest.approx(2 / 3)
    assert m["avg_f1"] == pytest.approx(43 / 60)
    assert m["missing_rate"] == pytest.approx(1 / 6)
    assert m["n_types"] == 2


def test_ner_entity_f1_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-ORG"]]
    pred = [["B-PER", "I-PER", "B-LOC", "O"]]  # PER correct, LOC spurious, ORG missed
    m = ner_metrics(gold, pred)
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(0.5)
    assert m["entity_f1"] == pytest.approx(0.5)
    assert m["n_gold_entities"] == 2 and m["n_pred_entities"] == 2
    assert ner_entity_f1(gold, pred) == pytest.approx(0.5)


def test_ner_short_prediction_padded_with_o():
    m = ner_metrics([["B-ORG", "O", "B-LOC"]], [["B-ORG"]])
    assert m["precision"] == pytest.approx(1.0)
    assert m["recall"] == pytest.approx(0.5)


def test_majority_floor_by_hand():
    # always 0: class 0 P=3/6, R=1 -> F1=2/3, weight 3/6 ; others F1 0  -> 1/3
    assert majority_floor("classification", GOLD, None, 3) == pytest.approx(1 / 3)
    # A majority No on [Y,N,N,N]: No P=3/4, R=1 -> 6/7, weight 3/4 -> 9/14 ; B all No -> 1
    assert majority_floor("headlines", HL_GOLD, HL_GROUPS, 2) == pytest.approx((9 / 14 + 1) / 2)
    assert majority_floor("ner", [], None, 0) == 0.0


def test_fast_f1_matches_sklearn_and_seqeval():
    rng = np.random.default_rng(3)
    gold = rng.integers(0, 3, 500)
    gold[gold == 2] = 1  # label 2 absent from gold but still in `labels`
    pred = [None if rng.random() < 0.1 else int(rng.integers(0, 3)) for _ in gold]
    sk_pred = [-1 if p is None else p for p in pred]
    want = f1_score(gold, sk_pred, labels=[0, 1, 2], average="weighted", zero_division=0)
    assert weighted_f1(gold, pred, 3) == pytest.approx(want)

    groups = rng.choice(["x", "y", "z"], 500)
    hg = rng.integers(0, 2, 500)
    assert headlines_avg_f1(hg, pred, groups) == pytest.approx(
        headlines_metrics(hg, [None if p == 2 else p for p in pred], groups)["avg_f1"]
    )

    tags = ["O", "O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC"]
    golds = [list(rng.choice(tags, 12)) for _ in range(40)]
    preds = [list(rng.choice(tags, 12)) for _ in range(40)]
    assert ner_entity_f1(golds, preds) == pytest.approx(seqeval_f1(golds, preds))


def test_bootstrap_contains_estimate_is_seeded_and_shrinks_with_data():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 3, 200)
    pred = np.where(rng.random(200) < 0.7, gold, rng.integers(0, 3, 200))
    fn = lambda g, p: weighted_f1(g, p, 3)  # noqa: E731
    point = fn(gold, pred)
    lo, hi = bootstrap_ci(fn, gold, pred, n_boot=500, seed=1)
    assert lo <= point <= hi and lo < hi
    assert bootstrap_ci(fn, gold, pred, n_boot=500, seed=1) == (lo, hi)
    assert bootstrap_ci(fn, gold, pred, n_boot=500, seed=2) != (lo, hi)
    lo10, hi10 = bootstrap_ci(fn, np.tile(gold, 10), np.tile(pred, 10), n_boot=500, seed=1)
    assert hi10 - lo10 < (hi - lo) / 2  # ~1/sqrt(10) as wide


def test_bootstrap_works_on_lists_headlines_and_tags():
    lo, hi = bootstrap_ci(headlines_avg_f1, HL_GOLD * 20, HL_PRED * 20, HL_GROUPS * 20, n_boot=200)
    assert lo <= 43 / 60 <= hi
    gold = [["B-PER", "I-PER", "O", "B-ORG"], ["B-LOC", "O"], ["O", "B-ORG"]] * 10
    pred = [["B-PER", "I-PER", "B-LOC", "O"], ["B-LOC", "O"], ["O", "O"]] * 10
    lo, hi = bootstrap_ci(ner_entity_f1, gold, pred, n_boot=200)
    assert lo <= ner_entity_f1(gold, pred) <= hi


def _cls_rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for g in rng.integers(0, 3, n):
        p = None if rng.random() < 0.05 else int(g if rng.random() < 0.6 else rng.integers(0, 3))
        rows.append({"choices": ["positive", "neutral", "negative"], "gold": int(g), "pred": p, "pred_tags": []})
    return rows


def test_task_metrics_classification_is_consistent_and_fast():
    rows = _cls_rows(1000)
    t0 = time.perf_counter()
    out = task_metrics("classification", rows, n_boot=1000, seed=0)
    assert time.perf_counter() - t0 < 5.0
    direct = classification_metrics([r["gold"] for r in rows], [r["pred"] for r in rows], 3)
    assert out["primary"] == "f1_weighted"
    assert out["score"] == pytest.approx(direct["f1_weighted"])
    assert out["ci95"][0] <= out["score"] <= out["ci95"][1]
    assert out["majority_floor"] < out["score"]
    assert out["missing_rate"] == pytest.approx(direct["missing_rate"])
    assert task_metrics("classification", rows, n_boot=200, seed=0)["ci95"] == \
        task_metrics("classification", rows, n_boot=200, seed=0)["ci95"]


def test_task_metrics_headlines_and_ner():
    rows = [{"gold": g, "pred": p, "group": grp, "choices": ["Yes", "No"]}
            for g, p, grp in zip(HL_GOLD * 20, HL_PRED * 20, HL_GROUPS * 20)]
    out = task_metrics("headlines", rows, n_boot=300, seed=4)
    assert out["primary"] == "avg_f1" and out["score"] == pytest.approx(43 / 60)
    assert out["majority_floor"] == pytest.approx((9 / 14 + 1) / 2)
    # the fast in-house path draws the same resamples as the generic one
    assert out["ci95"] == pytest.approx(list(bootstrap_ci(
        headlines_avg_f1, HL_GOLD * 20, HL_PRED * 20, HL_GROUPS * 20, n_boot=300, seed=4)))

    gold = [["B-PER", "I-PER", "O", "B-ORG"], ["B-LOC", "O"], ["O", "B-ORG"]] * 5
    pred = [["B-PER", "I-PER", "B-LOC", "O"], ["B-LOC", "O"], ["O", "O"]] * 5
    rows = [{"gold": -1, "pred": None, "tags": g, "pred_tags": p} for g, p in zip(gold, pred)]
    out = task_metrics("ner", rows, n_boot=300, seed=4)
    # gold 4 entities/sentence triple, pred 3, tp 2 -> F1 = 2*2/(4+3) = 4/7
    assert out["primary"] == "entity_f1" and out["score"] == pytest.approx(4 / 7)
    assert out["majority_floor"] == 0.0
    assert out["ci95"] == pytest.approx(list(bootstrap_ci(ner_entity_f1, gold, pred, n_boot=300, seed=4)))


def test_task_metrics_rejects_unknown_kind():
    with pytest.raises(ValueError):
        task_metrics("regression", [{"gold": 0}])
