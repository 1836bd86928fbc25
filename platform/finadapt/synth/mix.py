"""`finadapt mix`: write the real + synthetic training set at a synthetic:real ratio (see tasks/mixing.py)."""
from __future__ import annotations

from finadapt.synth.config import MixConfig
from finadapt.tasks import load_samples
from finadapt.tasks.flare_jsonl import read_samples
from finadapt.tasks.mixing import mix_samples
from finadapt.tasks.selection import select_rows


def write_mix(cfg: MixConfig) -> dict:
    """Write the real + synthetic training set at the configured ratio; returns per-task counts."""
    from finadapt.synth.pipeline import write_jsonl

    real = [s for t in cfg.tasks for s in select_rows(t, load_samples(t, "train"), cfg.limit_per_task, cfg.seed)]
    synthetic = [s for uri in cfg.synthetic for s in read_samples(uri)]
    result = mix_samples(real, synthetic, cfg.ratio, cfg.seed, cfg.on_short)
    write_jsonl(cfg.output, [s.to_row() for s in result.samples])
    return result.per_task
