"""Seeded row selection shared by every stage that takes a limited share of a task (eval, SFT, mixing)."""
from __future__ import annotations

import random

from finadapt.tasks import get_task


def select_rows(task: str, samples: list, limit: int | None, seed: int) -> list:
    """A seeded subset that keeps file order; Headlines is limited by headline (all 9 questions kept)."""
    if limit is None:
        return samples
    rng = random.Random(f"{seed}:{task}")
    if get_task(task).kind == "headlines":
        texts = sorted({s.text for s in samples})
        keep = set(rng.sample(texts, min(limit, len(texts))))
        return [s for s in samples if s.text in keep]
    if len(samples) <= limit:
        return samples
    keep_idx = set(rng.sample(range(len(samples)), limit))
    return [s for i, s in enumerate(samples) if i in keep_idx]
