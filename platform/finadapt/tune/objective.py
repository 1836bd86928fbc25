"""The number ASHA compares: the declared validation aggregate, floored when training diverged.

Why the floor: a diverged model can still score chance-level accuracy (or NaN) on validation; a
NaN or exploding loss must never look as good as a model that learned.
"""
from __future__ import annotations

import math

from finadapt.tune.config import ObjectiveSection


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class ObjectiveTracker:
    """Fed every report of one trial, in order; returns its objective, or None when the report has no
    validation and training has not diverged."""

    def __init__(self, section: ObjectiveSection):
        self.section = section
        self.first_loss: float | None = None
        self.diverged = False

    def _check_divergence(self, metrics: dict) -> None:
        loss = metrics.get("loss")
        if loss is None:
            return
        if not _finite(loss):
            self.diverged = True
            return
        if self.first_loss is None:
            self.first_loss = float(loss)
        elif loss > self.section.divergence_factor * max(self.first_loss, 1e-8):
            self.diverged = True

    def score(self, metrics: dict) -> float | None:
        """The validation aggregate in `metrics` (NaN if a task score is NaN), None without validation."""
        s = self.section
        if s.metric == "val_score" and s.aggregate == "weights":
            parts = [(w, metrics.get(f"val_{task}")) for task, w in s.weights.items()]
            if all(v is None for _, v in parts):
                return None
            if any(not _finite(v) for _, v in parts):
                return math.nan
            return sum(w * v for w, v in parts) / sum(w for w, _ in parts)
        value = metrics.get(s.metric)
        if value is None:
            return None
        return float(value) if _finite(value) else math.nan

    def update(self, metrics: dict) -> float | None:
        self._check_divergence(metrics)
        if self.diverged:
            return self.section.diverged_score
        value = self.score(metrics)
        if value is not None and math.isnan(value):
            return self.section.diverged_score
        return value
