"""The stage configs a RayJob runs, loaded the way its entrypoint loads them, and what they ask of the cluster.

A registered stage goes through `finadapt.stages.build_config` (the registry `python pipelines/<stage>.py`
uses), the sweep through `finadapt.tune.config.load_sweep`, and a reproduction's steps through
`finadapt.reproduce.plan.stage_config`: a broken stage config fails the render with that config's own
error, prefixed with the job's name.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from finadapt.cluster.config import SWEEP, JobSpec
from finadapt.cluster.sizing import StageDemand, stage_demand, sweep_demand
from finadapt.config import ConfigError


@contextmanager
def project_root(root: Path) -> Iterator[None]:
    """Run inside `root`: stage configs name other files (a sweep's space and base, a reproduction's
    step configs) relative to the project root, as the entrypoints do from the image's app_dir."""
    old = Path.cwd()
    os.chdir(root)
    try:
        yield
    finally:
        os.chdir(old)


def _reproduce_demands(cfg, source: str, driver_cpus: float) -> list[StageDemand]:
    """One demand per stage config a reproduction's planned steps use (they run one after another)."""
    from finadapt.reproduce.plan import plan_steps, stage_config

    sections: dict[str, str] = {}
    for spec in plan_steps(cfg):
        if spec.kind == "sft":
            sections["final" if spec.variant == "f" else "sft"] = "sft"
        elif spec.kind == "eval":
            sections["full_eval" if spec.variant in ("a", "f") else "ablation_eval"] = "eval"
        else:
            sections[spec.kind] = spec.kind
    demands = []
    for section, stage in sections.items():
        step_source = getattr(cfg, section)
        where = f"{source} {section} ({step_source.config or 'defaults'})"
        demands.append(stage_demand(stage, stage_config(stage, step_source, {}), where, driver_cpus))
    return demands


def job_demands(name: str, job: JobSpec, root: Path, driver_cpus: float) -> list[StageDemand]:
    """What job `name` asks of the cluster, from its stage config(s) under `root`."""
    if not (root / job.script).is_file():
        raise ConfigError(f"job {name}: script {job.script} does not exist under {root}")
    try:
        with project_root(root):
            if job.stage == SWEEP:
                from finadapt.tune.config import load_sweep

                return [sweep_demand(load_sweep(job.config), job.config, driver_cpus)]
            from finadapt.stages import build_config

            cfg = build_config(job.stage, job.config)
            if job.stage == "reproduce":
                return _reproduce_demands(cfg, job.config, driver_cpus)
            return [stage_demand(job.stage, cfg, job.config, driver_cpus)]
    except ConfigError as err:
        raise type(err)(f"job {name}: {err}") from None
