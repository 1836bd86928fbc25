"""FLARE metrics with honest uncertainty (missing rates, majority floors, bootstrap CIs).

Point estimates come from scikit-learn / seqeval, exactly as FLARE computes them. The
bootstrap resamples thousands of times, so it uses equivalent numpy confusion-count versions
(checked against scikit-learn/seqeval in the tests) to stay within a second or two.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

MISSING = -1  # sentinel for an unparsable answer: never in `labels`, so it always counts wrong
PRIMARY = {"classification": "f1_weighted", "headlines": "avg_f1", "ner": "entity_f1"}
YES, NO = 0, 1


# --------------------------------------------------------------------------- encoding helpers
def encode_pred(pred: Sequence[Any], n_labels: int | None = None) -> np.ndarray:
    """Map predictions to int labels; None / NaN / out-of-range become the MISSING sentinel."""
    out = np.full(len(pred), MISSING, dtype=np.int64)
    for i, p in enumerate(pred):
        if p is None or (isinstance(p, float) and math.isnan(p)):
            continue
        p = int(p)
        if p >= 0 and (n_labels is None or p < n_labels):
            out[i] = p
    return out


def _encode_gold(gold: Sequence[Any], n_labels: int) -> np.ndarray:
    g = np.asarray(gold, dtype=np.int64).reshape(-1)
    if g.size and (g.min() < 0 or g.max() >= n_labels):
        raise ValueError(f"gold labels must lie in [0, {n_labels}); got {g.min()}..{g.max()}")
    return g


def _nan_dict(keys: Sequence[str]) -> dict:
    return {k: float("nan") for k in keys}


# --------------------------------------------------------------------------- fast F1 from counts
def _confusion(gold: np.ndarray, pred: np.ndarray, n_labels: int) -> np.ndarray:
    """(n_labels, n_labels + 1) counts; the last column collects MISSING predictions."""
    col = np.where(pred == MISSING, n_labels, pred)
    flat = np.bincount(gold * (n_labels + 1) + col, minlength=n_labels * (n_labels + 1))
    return flat.reshape(n_labels, n_labels + 1)


def _f1_from_confusion(conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(weighted F1, macro F1) from confusion counts of shape (..., L, L + 1).

    Same definition as sklearn with zero_division=0: F1_l = 2tp / (2tp + fp + fn), weighted by
    gold support; a label with no gold and no prediction contributes 0 to the macro mean.
    """
    n_labels = conf.shape[-2]
    sq = conf[..., :, :n_labels]
    tp = np.diagonal(sq, axis1=-2, axis2=-1).astype(float)
    support = conf.sum(axis=-1).astype(float)
    predicted = sq.sum(axis=-2).astype(float)
    denom = predicted + support  # = 2tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    total = support.sum(axis=-1)
    weighted = np.divide((f1 * support).sum(axis=-1), total, out=np.zeros_like(total), where=total > 0)
    return weighted, f1.mean(axis=-1)


def weighted_f1(gold: Sequence[int], pred: Sequence[int | None], n_labels: int) -> float:
    """Weighted F1 over labels 0..n_labels-1 (fast numpy twin of sklearn's, for the bootstrap)."""
    g = _encode_gold(gold, n_labels)
    if g.size == 0:
        return float("nan")
    p = pred if isinstance(pred, np.ndarray) and pred.dtype.kind == "i" else encode_pred(pred, n_labels)
    return float(_f1_from_confusion(_confusion(g, p, n_labels))[0])


def _avg_f1_codes(gold: np.ndarray, pred: np.ndarray, gcode: np.ndarray, n_groups: int) -> float:
    """Unweighted mean over groups of the per-group weighted F1 on {Yes, No}; absent groups skipped."""
    col = np.where(pred == MISSING, 2, pred)
    flat = np.bincount(gcode * 6 + gold * 3 + col, minlength=n_groups * 6)
    conf = flat.reshape(n_groups, 2, 3)
    present = conf.sum(axis=(1, 2)) > 0
    if not present.any():
        return float("nan")
    return float(_f1_from_confusion(conf[present])[0].mean())


def headlines_avg_f1(gold: Sequence[int], pred: Sequence[int | None], groups: Sequence[Hashable]) -> float:
    """Headlines AvgF1 (fast numpy twin of `headlines_metrics`' avg_f1, for the bootstrap)."""
    if len(gold) == 0:
        return float("nan")
    _, gcode = np.unique(np.asarray(groups), return_inverse=True)
    gcode = gcode.reshape(-1)
    p = pred if isinstance(pred, np.ndarray) and pred.dtype.kind == "i" else encode_pred(pred, 2)
    return _avg_f1_codes(_encode_gold(gold, 2), p, gcode, int(gcode.max()) + 1)


# --------------------------------------------------------------------------- point metrics
def classification_metrics(gold: Sequence[int], pred: Sequence[int | None], n_labels: int) -> dict:
    """FLARE FPB / FiQA-SA metrics; a missing prediction (None) counts as wrong."""
    from sklearn.metrics import accuracy_score, f1_score

    keys = ("accuracy", "f1_weighted", "f1_macro", "missing_rate")
    if len(gold) == 0:
        return {**_nan_dict(keys), "n": 0}
    g = _encode_gold(gold, n_labels)
    p = encode_pred(pred, n_labels)
    labels = list(range(n_labels))
    return {
        "accuracy": float(accuracy_score(g, p)),
        "f1_weighted": float(f1_score(g, p, labels=labels, average="weighted", zero_division=0)),
        "f1_macro": float(f1_score(g, p, labels=labels, average="macro", zero_division=0)),
        "missing_rate": float(np.mean(p == MISSING)),
        "n": int(g.size),
    }


def headlines_metrics(gold: Sequence[int], pred: Sequence[int | None], groups: Sequence[str]) -> dict:
    """FLARE Headlines: weighted F1 over {Yes, No} per question type, AvgF1 = their plain mean.

    A None (robust mode could not find yes/no) is a wrong answer, not a silent "No"; the
    missing rate says how often that happened.
    """
    from sklearn.metrics import accuracy_score, f1_score

    if len(gold) == 0:
        return {**_nan_dict(("avg_f1", "accuracy", "missing_rate")), "per_type": {}, "n": 0}
    g = _encode_gold(gold, 2)
    p = encode_pred(pred, 2)
    grp = np.asarray([str(x) for x in groups])
    per_type = {}
    for name in sorted(set(grp.tolist())):
        m = grp == name
        per_type[name] = float(f1_score(g[m], p[m], labels=[YES, NO], average="weighted", zero_division=0))
    return {
        "avg_f1": float(np.mean(list(per_type.values()))),
        "per_type": per_type,
        "accuracy": float(accuracy_score(g, p)),
        "missing_rate": float(np.mean(p == MISSING)),
        "n": int(g.size),
        "n_types": len(per_type),
    }


def _align_tags(gold_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> tuple[list, list]:
    """Lists of str tag lists; predictions padded/truncated with O to the gold length."""
    golds = [[str(t) for t in g] for g in gold_tags]
    preds = []
    for g, p in zip(golds, pred_tags):
        p = [str(t) for t in (p if p is not None else [])][: len(g)]
        preds.append(p + ["O"] * (len(g) - len(p)))
    return golds, preds


def ner_metrics(gold_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]], strict: bool = False) -> dict:
    """Entity-level micro P/R/F1 with seqeval (default lenient mode unless `strict` -> IOB2 strict)."""
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    if len(gold_tags) != len(pred_tags):
        raise ValueError(f"{len(gold_tags)} gold vs {len(pred_tags)} predicted sentences")
    if len(gold_tags) == 0:
        return {**_nan_dict(("entity_f1", "precision", "recall")), "per_type": {}, "n": 0}
    golds, preds = _align_tags(gold_tags, pred_tags)
    kw: dict[str, Any] = {"mode": "strict", "scheme": IOB2} if strict else {}
    report = classification_report(golds, preds, output_dict=True, zero_division=0, **kw)
    tp, n_pred, n_gold = _ner_counts(golds, preds)
    return {
        "entity_f1": float(f1_score(golds, preds, zero_division=0, **kw)),
        "precision": float(precision_score(golds, preds, zero_division=0, **kw)),
        "recall": float(recall_score(golds, preds, zero_division=0, **kw)),
        "per_type": {k: float(v["f1-score"]) for k, v in report.items() if "avg" not in k},
        "n_gold_entities": int(n_gold.sum()),
        "n_pred_entities": int(n_pred.sum()),
        "n": len(golds),
    }


def _ner_counts(golds: list[list[str]], preds: list[list[str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sentence (true positives, predicted entities, gold entities), seqeval default mode.

    Entities never cross sentences, so corpus micro-F1 is a function of the summed counts;
    that makes the NER bootstrap a cheap sum instead of a seqeval call per resample.
    """
    from seqeval.metrics.sequence_labeling import get_entities

    tp, n_pred, n_gold = (np.zeros(len(golds), dtype=np.int64) for _ in range(3))
    for i, (g, p) in enumerate(zip(golds, preds)):
        ge, pe = set(get_entities(g)), set(get_entities(p))
        tp[i], n_pred[i], n_gold[i] = len(ge & pe), len(pe), len(ge)
    return tp, n_pred, n_gold


def _f1_from_counts(tp: np.ndarray, n_pred: np.ndarray, n_gold: np.ndarray) -> float:
    denom = int(n_pred.sum() + n_gold.sum())
    return 2.0 * int(tp.sum()) / denom if denom else 0.0


def ner_entity_f1(gold_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> float:
    """seqeval micro entity F1 (default mode) from per-sentence counts."""
    return _f1_from_counts(*_ner_counts(*_align_tags(gold_tags, pred_tags)))


# --------------------------------------------------------------------------- floors and CIs
def _majority(gold: np.ndarray, n_labels: int) -> int:
    return int(np.bincount(gold, minlength=n_labels).argmax())  # ties -> smallest label


def majority_floor(
    task_kind: str,
    gold: Sequence[int] | None = None,
    groups: Sequence[str] | None = None,
    n_labels: int | None = None,
) -> float:
    """Primary metric of a constant majority-class predictor: the score that means "learned nothing"."""
    if task_kind == "ner":
        return 0.0
    if gold is None or len(gold) == 0:
        return float("nan")
    if task_kind == "classification":
        n_labels = n_labels or int(max(gold)) + 1
        g = _encode_gold(gold, n_labels)
        return weighted_f1(g, np.full(g.size, _majority(g, n_labels)), n_labels)
    if task_kind == "headlines":
        g = _encode_gold(gold, 2)
        grp = np.asarray([str(x) for x in (groups if groups is not None else [""] * g.size)])
        pred = np.empty_like(g)
        for name in set(grp.tolist()):
            m = grp == name
            pred[m] = _majority(g[m], 2)
        return headlines_avg_f1(g, pred, grp)
    raise ValueError(f"unknown task kind {task_kind!r}")


def _as_resamplable(a: Any) -> Any:
    """1-D numpy array for scalar sequences; ragged/nested sequences (tag lists) stay lists."""
    if isinstance(a, np.ndarray):
        return a
    a = list(a)
    if any(isinstance(x, (list, tuple, np.ndarray)) for x in a):
        return a
    return np.asarray(a, dtype=object if any(x is None for x in a) else None)


def _take(a: Any, idx: np.ndarray) -> Any:
    return a[idx] if isinstance(a, np.ndarray) else [a[i] for i in idx]


def bootstrap_ci(
    metric_fn: Callable[..., float],
    *arrays: Sequence[Any],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `metric_fn(*arrays)`, resampling rows jointly.

    Rows (indices) are drawn with replacement by ``numpy.random.default_rng(seed)``, so the
    interval is reproducible. Works for parallel sequences of scalars or of tag lists.
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array")
    data = [_as_resamplable(a) for a in arrays]
    n = len(data[0])
    if any(len(a) != n for a in data):
        raise ValueError("all arrays must have the same length")
    if n == 0 or n_boot <= 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot, dtype=float)
    for b in range(n_boot):
        idx = rng.integers(0, n, size=n)
        stats[b] = metric_fn(*(_take(a, idx) for a in data))
    if np.all(np.isnan(stats)):
        return (float("nan"), float("nan"))
    lo, hi = np.nanpercentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return (float(lo), float(hi))


# --------------------------------------------------------------------------- one-call API
def _n_labels(rows: Sequence[dict]) -> int:
    n_choices = max((len(r.get("choices") or []) for r in rows), default=0)
    return max(n_choices, max(int(r["gold"]) for r in rows) + 1)


def task_metrics(kind: str, rows: Sequence[dict], n_boot: int = 1000, seed: int = 0) -> dict:
    """Score prediction rows (Sample fields + `pred` / `pred_tags`) in one call.

    Returns {"primary", "score", "ci95", "majority_floor", ...all metrics of the kind}.
    """
    if kind not in PRIMARY:
        raise ValueError(f"unknown task kind {kind!r}; expected one of {tuple(PRIMARY)}")
    rows = list(rows)
    primary = PRIMARY[kind]
    if not rows:
        return {"primary": primary, "score": float("nan"), "ci95": [float("nan")] * 2,
                "majority_floor": float("nan"), "n": 0}
    if kind == "ner":
        golds, preds = _align_tags([r.get("tags") or [] for r in rows], [r.get("pred_tags") for r in rows])
        metrics = ner_metrics(golds, preds)
        ci = bootstrap_ci(_f1_from_counts, *_ner_counts(golds, preds), n_boot=n_boot, seed=seed)
        floor = 0.0
    else:
        gold = [int(r["gold"]) for r in rows]
        pred = [r.get("pred") for r in rows]
        if kind == "classification":
            n_labels = _n_labels(rows)
            metrics = classification_metrics(gold, pred, n_labels)
            p = encode_pred(pred, n_labels)
            ci = bootstrap_ci(lambda g, q: weighted_f1(g, q, n_labels), np.asarray(gold), p,
                              n_boot=n_boot, seed=seed)
            floor = majority_floor(kind, gold, None, n_labels)
        else:
            groups = [str(r.get("group") or "") for r in rows]
            metrics = headlines_metrics(gold, pred, groups)
            _, gcode = np.unique(np.asarray(groups), return_inverse=True)
            n_groups = int(gcode.max()) + 1
            ci = bootstrap_ci(lambda g, q, c: _avg_f1_codes(g, q, c, n_groups),
                              np.asarray(gold, dtype=np.int64), encode_pred(pred, 2), gcode.reshape(-1),
                              n_boot=n_boot, seed=seed)
            floor = majority_floor(kind, gold, groups, 2)
    return {"primary": primary, "score": metrics[primary], "ci95": [ci[0], ci[1]],
            "majority_floor": floor, "n_boot": n_boot, "seed": seed, **metrics}
