"""Synthetic:real mixing per task at ratio r (SFT data, `finadapt mix`) — the knob the sweeps turn.

For each task with n real samples, round(r * n) synthetic samples of that task are drawn (seeded,
without replacement). Too few synthetic samples is an error naming the numbers (or, with
on_short="cap", all of them are used and the achieved ratio is reported).
"""
from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from finadapt.errors import FinadaptError

from .base import Sample

log = logging.getLogger(__name__)


class MixError(FinadaptError, ValueError):
    """The requested ratio cannot be met from the synthetic pool."""


@dataclass
class MixResult:
    samples: list[Sample]
    per_task: dict[str, dict] = field(default_factory=dict)  # real, synthetic, requested, achieved ratio


def ratio_for(ratio: float | Mapping[str, float], task: str) -> float:
    value = ratio.get(task, 0.0) if isinstance(ratio, Mapping) else ratio
    if value < 0:
        raise MixError(f"ratio for {task} must be >= 0, got {value}")
    return float(value)


def mix_samples(real: Sequence[Sample], synthetic: Sequence[Sample], ratio: float | Mapping[str, float],
                seed: int = 0, on_short: str = "error") -> MixResult:
    """Real samples plus round(r * n_real) synthetic ones per task, shuffled (seeded)."""
    real_by: dict[str, list[Sample]] = {}
    for s in real:
        real_by.setdefault(s.task, []).append(s)
    synth_by: dict[str, list[Sample]] = {}
    for s in synthetic:
        synth_by.setdefault(s.task, []).append(s)
    if isinstance(ratio, Mapping):
        unknown = set(ratio) - set(real_by)
        if unknown:
            raise MixError(f"ratio names tasks without real samples: {sorted(unknown)}")
    out: list[Sample] = []
    result = MixResult(out)
    for task, rows in real_by.items():
        r = ratio_for(ratio, task)
        wanted = round(r * len(rows))
        pool = synth_by.get(task, [])
        if wanted > len(pool):
            message = (f"{task}: ratio {r} x {len(rows)} real samples needs {wanted} synthetic samples, "
                       f"the synthetic data has {len(pool)}")
            if on_short != "cap":
                raise MixError(message + " (generate more, lower the ratio, or set on_short=cap)")
            log.warning("%s; using all %d", message, len(pool))
            wanted = len(pool)
        chosen = random.Random(f"{seed}:{task}").sample(pool, wanted)
        out.extend(rows)
        out.extend(chosen)
        result.per_task[task] = dict(real=len(rows), synthetic=wanted, requested_ratio=r,
                                     achieved_ratio=wanted / len(rows) if rows else 0.0,
                                     synthetic_available=len(pool))
    random.Random(seed).shuffle(out)
    return result
