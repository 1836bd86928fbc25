"""Tiny sweep inputs in the real formats: a base sft config, a space file, a sweep file, a synthetic pool."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import yaml
from train_fixtures import with_extra


def base_config(tmp: Path, **extra) -> Path:
    data = {
        "model": {"spec": "tiny-random"},
        "data": {"tasks": ["fpb"], "limit_per_task": 16, "max_length": 192},
        "batch": {"batch_size": 8, "grad_accum": 1, "micro_batch_tokens": 2048},
        "epochs": 2, "eval_every_steps": 2, "optim": {"warmup_ratio": 0.0, "lr": 1.0e-3},
        "validation": {"tasks": ["fpb"], "limit": 8, "task_limits": {}},
        "ray": {"workers": 1, "cpus_per_worker": 1},
    }
    with_extra(data, extra)
    path = tmp / "base.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def space_file(tmp: Path, params: dict, name: str = "space.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump({"params": params}))
    return path


def sweep_file(tmp: Path, space: Path, base: Path, **extra) -> Path:
    data = {"name": "s", "space": str(space), "base": str(base), "storage_path": str(tmp / "sweeps"),
            "searcher": "grid", "scheduler": {"kind": "asha", "grace_period_steps": 2, "reduction_factor": 2},
            "final_test": {"enabled": False}}
    data.update(extra)
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def synthetic_pool(tmp: Path, task: str = "fpb", n: int = 20) -> Path:
    """`n` synthetic samples of `task` (real training rows re-identified, as `finadapt synth` writes them)."""
    from finadapt.tasks import load_samples

    rows = load_samples(task, "train")[:n]
    path = tmp / "pool.jsonl"
    path.write_text("".join(json.dumps(replace(s, id=f"synth-{i}").to_row()) + "\n" for i, s in enumerate(rows)))
    return path
