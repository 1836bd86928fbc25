"""Ray Tune sweeps over the stage-2 config (synthetic ratio, learning rate, ...), scored on the FLARE
validation splits, with ASHA, resume, a report and the best config as `best.yaml`.

    from finadapt.tune import load_sweep, run_sweep
    out = run_sweep(load_sweep("pipelines/configs/sweep_cpu.yaml"))       # resume=True to continue

Modules: space (YAML search spaces), config (SweepConfig), trial (one Tune trial), objective,
runner (Tuner, resume, placement-group guard), best (best.yaml, one test scoring), records/report
(outputs), metrics (Ray gauges), cli (`finadapt sweep`). Importing this package does not import Ray.
"""
from __future__ import annotations


def load_sweep(path, overrides=None):
    from finadapt.tune.config import load_sweep as _load

    return _load(path, overrides)


def run_sweep(sweep, resume: bool = False) -> dict:
    from finadapt.tune.sweep import run_sweep as _run

    return _run(sweep, resume)


__all__ = ["load_sweep", "run_sweep"]
