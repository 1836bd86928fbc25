"""The sweep config (`pipelines/configs/sweep_*.yaml`): what to search, how, where results go.

A space file (`tune_spaces/*.yaml`) holds `params:` and may also hold any sweep setting below as a
default; the sweep config file overrides it, and `key=value` overrides beat both.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from finadapt.config import ConfigError, RaySection, StrictModel, apply_overrides, read_yaml_mapping, validate
from finadapt.train.config import SftConfig
from finadapt.tune.space import SearchSpace, load_space_file, validate_space


class SchedulerSection(StrictModel):
    kind: Literal["asha", "none"] = "asha"
    grace_period_steps: int = Field(2, ge=1, description="optimizer steps every trial runs before ASHA may stop it")
    reduction_factor: float = Field(2, gt=1, description="ASHA keeps the best 1/reduction_factor at each rung")


class ObjectiveSection(StrictModel):
    metric: str = Field("val_score", description="val_score (aggregate over validation tasks) or val_<task>")
    aggregate: Literal["mean", "weights"] = Field("mean", description="how val_score combines the tasks")
    weights: dict[str, float] = Field({}, description="task -> weight, for aggregate: weights")
    divergence_factor: float = Field(10.0, gt=1, description="training loss above this x the first step's "
                                     "loss (or not finite) marks the trial diverged")
    diverged_score: float = Field(-1.0, description="objective of a diverged trial: below any real score")

    @model_validator(mode="after")
    def _check(self) -> "ObjectiveSection":
        if self.metric != "val_score" and not self.metric.startswith("val_"):
            raise ValueError(f"metric {self.metric!r}: use val_score or val_<task>")
        if self.aggregate == "weights" and not self.weights:
            raise ValueError("aggregate: weights needs objective.weights (task -> weight)")
        if any(w < 0 for w in self.weights.values()) or (self.weights and sum(self.weights.values()) <= 0):
            raise ValueError("objective.weights must be >= 0 with a positive sum")
        return self


class TrialResources(StrictModel):
    """What Tune reserves for a trial's own process (its Ray Train workers are sized by the stage's config)."""

    cpu: float = Field(1, ge=0)
    gpu: float = Field(0, ge=0)


class FinalTestSection(StrictModel):
    enabled: bool = Field(True, description="score the best trial's model on the FLARE test splits, once")
    tasks: list[str] | None = Field(None, description="None: the stage's validation tasks")
    limit: int | None = Field(None, ge=1, description="test rows per task (None: all)")
    modes: list[Literal["choice", "compat", "robust"]] = ["choice"]
    wrapper: Literal["raw", "chat", "finma"] | None = Field(None, description="None: as the stage validates")


class SweepConfig(StrictModel):
    name: str = Field("sweep", pattern=r"^[A-Za-z0-9_.-]+$", description="sweep name: <storage_path>/<name>")
    space: str = Field(description="search space YAML (tune_spaces/...)")
    base: str | None = Field(None, description="base sft stage config YAML (None: SftConfig defaults)")
    base_overrides: list[str] = Field([], description="key.sub=value applied to the base config")
    storage_path: str = Field("runs/sweeps", description="local dir or s3://bucket/prefix")
    searcher: Literal["random", "grid", "optuna"] = "random"
    seed: int | None = Field(0, description="searcher seed (None: unseeded)")
    scheduler: SchedulerSection = SchedulerSection()
    num_samples: PositiveInt = Field(1, description="samples of the random/optuna params (x the grid)")
    max_concurrent_trials: PositiveInt = 1
    trial_resources: TrialResources = TrialResources()
    objective: ObjectiveSection = ObjectiveSection()
    final_test: FinalTestSection = FinalTestSection()
    trial_env: dict[str, str] = Field({}, description="environment variables set in every trial process")
    ray: RaySection = RaySection()


@dataclass
class Sweep:
    """Everything a sweep needs, checked: its config, the space, the base stage config as a dict."""

    cfg: SweepConfig
    space: SearchSpace
    base: dict
    source: str

    @property
    def root(self) -> str:
        from finadapt import storage

        path = self.cfg.storage_path
        return storage.join(path if storage.is_s3(path) else str(Path(path).expanduser().resolve()), self.cfg.name)


def _merge(low: dict, high: dict) -> dict:
    out = dict(low)
    for key, value in high.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_base(cfg: SweepConfig) -> dict:
    """The base stage config as a dict (overrides applied), checked once by SftConfig."""
    source = cfg.base or "<SftConfig defaults>"
    data = read_yaml_mapping(cfg.base, "base stage config") if cfg.base else {}
    data = apply_overrides(data, cfg.base_overrides)
    validate(SftConfig, data, source)
    return data


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> Sweep:
    """Read the sweep file, merge its space file's settings under it, apply overrides, validate the
    sweep, the base config and every edge of the space (before any trial starts)."""
    file = Path(path)
    data = apply_overrides(read_yaml_mapping(file, "sweep config"), list(overrides or []))
    if "space" not in data:
        raise ConfigError(f"{file}: space: missing (a tune_spaces/*.yaml file)")
    settings, space = load_space_file(data["space"])
    cfg = validate(SweepConfig, _merge(settings, data), str(file))
    base = load_base(cfg)
    validate_space(space, base)
    return Sweep(cfg=cfg, space=space, base=base, source=str(file))
