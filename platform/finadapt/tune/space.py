"""Search spaces as YAML: dotted keys of the stage config -> one distribution each.

    params:
      data.synthetic_ratio: {grid: [0, 0.5, 1.0]}
      optim.lr: {loguniform: [3.0e-5, 1.0e-3]}

Why validated here: a misspelled key or a value the stage rejects must fail before any trial starts,
naming the key and the space file, not minutes later inside trial 4.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from finadapt.config import ConfigError, validate
from finadapt.train.config import SftConfig

Kind = Literal["grid", "choice", "uniform", "loguniform", "randint"]
KINDS: tuple[str, ...] = ("grid", "choice", "uniform", "loguniform", "randint")
# The trial sets these itself (its own run name and directories under the sweep's storage).
TRIAL_OWNED = ("checkpoint.name", "checkpoint.storage_path", "output_dir")


class Param(BaseModel):
    key: str
    kind: Kind
    values: list[Any]  # grid/choice: the values; ranges: [low, high]

    def edges(self) -> list[Any]:
        """Values every trial config may take at the extremes: all listed values, or both bounds
        (randint's upper bound is exclusive, as in Tune)."""
        if self.kind == "randint":
            return [self.values[0], self.values[1] - 1]
        return list(self.values)

    def to_tune(self):
        from ray import tune

        low_high = self.values
        return {"grid": lambda: tune.grid_search(list(self.values)), "choice": lambda: tune.choice(list(self.values)),
                "uniform": lambda: tune.uniform(*low_high), "loguniform": lambda: tune.loguniform(*low_high),
                "randint": lambda: tune.randint(*low_high)}[self.kind]()


class SearchSpace(BaseModel):
    source: str
    params: list[Param]

    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    def to_tune(self) -> dict:
        return {p.key: p.to_tune() for p in self.params}

    def param(self, key: str) -> Param:
        return next(p for p in self.params if p.key == key)


def _field_path_ok(model: type[BaseModel], parts: list[str]) -> bool:
    """`parts` names a field of `model` (descending through nested config sections; a dict field
    such as data.synthetic_ratio may take sub-keys)."""
    fields = model.model_fields
    if parts[0] not in fields:
        return False
    if len(parts) == 1:
        return True
    annotation = fields[parts[0]].annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _field_path_ok(annotation, parts[1:])
    return "dict" in str(annotation)


def _parse_param(key: str, spec: Any, source: str) -> Param:
    where = f"{source}: params.{key}"
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"{where}: give exactly one distribution, one of {', '.join(KINDS)} "
                          f"(e.g. {{grid: [0, 0.5]}}), got {spec!r}")
    kind, values = next(iter(spec.items()))
    if kind not in KINDS:
        raise ConfigError(f"{where}: unknown distribution {kind!r}; use one of {', '.join(KINDS)}")
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: {kind} needs a non-empty list, got {values!r}")
    if kind in ("uniform", "loguniform", "randint"):
        if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ConfigError(f"{where}: {kind} needs [low, high] numbers, got {values!r}")
        low, high = values
        if not low < high:
            raise ConfigError(f"{where}: {kind} needs low < high, got {values!r}")
        if kind == "loguniform" and low <= 0:
            raise ConfigError(f"{where}: loguniform needs low > 0, got {values!r}")
        if kind == "randint" and not all(isinstance(v, int) for v in values):
            raise ConfigError(f"{where}: randint needs integer bounds, got {values!r}")
        if any(math.isnan(float(v)) or math.isinf(float(v)) for v in values):
            raise ConfigError(f"{where}: bounds must be finite, got {values!r}")
    return Param(key=key, kind=kind, values=values)


def parse_space(data: Any, source: str) -> SearchSpace:
    """The `params` mapping of a space file -> SearchSpace; key names are checked against SftConfig."""
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{source}: params must be a non-empty mapping of dotted config keys to distributions")
    params = []
    for key, spec in data.items():
        key = str(key)
        if key in TRIAL_OWNED:
            raise ConfigError(f"{source}: params.{key}: set by each trial (its own run under the sweep's "
                              "storage_path); it cannot be searched")
        if not _field_path_ok(SftConfig, key.split(".")):
            raise ConfigError(f"{source}: params.{key}: unknown key of the sft stage config (SftConfig)")
        params.append(_parse_param(key, spec, source))
    return SearchSpace(source=source, params=params)


def set_dotted(data: dict, key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def apply_params(base: dict, params: dict[str, Any]) -> dict:
    """A copy of the stage config dict with the trial's dotted params set."""
    data = copy.deepcopy(base)
    for key, value in params.items():
        set_dotted(data, key, value)
    return data


def edge_configs(space: SearchSpace) -> list[dict[str, Any]]:
    """Param sets to validate before any trial: each param's every edge value alone, and all params at
    their first edges together and at their last edges together."""
    sets = [{p.key: v} for p in space.params for v in p.edges()]
    sets.append({p.key: p.edges()[0] for p in space.params})
    sets.append({p.key: p.edges()[-1] for p in space.params})
    return sets


def validate_space(space: SearchSpace, base: dict) -> list[SftConfig]:
    """Every edge config validated by SftConfig; an error names the key(s), the value and the space file."""
    configs = []
    for params in edge_configs(space):
        try:
            configs.append(validate(SftConfig, apply_params(base, params), space.source))
        except ConfigError as err:
            shown = ", ".join(f"params.{k}={v!r}" for k, v in params.items())
            raise ConfigError(f"{space.source}: {shown}: the sft stage rejects this value: "
                              f"{str(err).split(': invalid SftConfig: ', 1)[-1]}") from None
    return configs


def load_space_file(path: str | Path) -> tuple[dict, SearchSpace]:
    """(other top-level settings of the file, its search space)."""
    from finadapt.config import read_yaml_mapping

    file = Path(path)
    data = read_yaml_mapping(file, "search space file")
    if "params" not in data:
        raise ConfigError(f"{file}: a search space file needs a top-level `params:` mapping")
    settings = {k: v for k, v in data.items() if k != "params"}
    return settings, parse_space(data["params"], str(file))
