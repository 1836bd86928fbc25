"""Typed configs: one pydantic model per stage, loaded from YAML, overridable as `key.sub=value`.

The YAML file is the single source of truth for a run; the CLI and `ray job submit` entrypoints
read the same file, and an invalid value fails naming the field and the file.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, ClassVar, Literal, TypeVar

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator,
                      model_validator)

from finadapt.errors import FinadaptError

PIPELINE_CONFIGS = Path(__file__).resolve().parents[2] / "pipelines" / "configs"


class ConfigError(FinadaptError, ValueError):
    """A config that cannot be used; the message names the file and the field."""

    label = "config error"


class StrictModel(BaseModel):
    # A string field given a number (`output_dir=2024`, `model.spec=7`) keeps it as text.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)


class _Loader(yaml.SafeLoader):
    """YAML without implicit dates: `2024-01-05` is a string (no config field is a date)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def yaml_load(text: str):
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def unique_non_empty(values: list[str], what: str) -> list[str]:
    """A list option that needs at least one entry; repeats dropped, order kept."""
    if not values:
        raise ValueError(f"at least one {what} is needed")
    return list(dict.fromkeys(values))


def known_tasks(values: list[str]) -> list[str]:
    """Task names must be built-in (or registered) tasks: a typo fails at load, not mid-run."""
    from finadapt.tasks import all_task_names

    known = all_task_names()
    unknown = [v for v in values if v not in known]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known: {', '.join(known)} "
                         "(a user-defined task goes in task_files)")
    return list(dict.fromkeys(values))


# A list of task names checked when the config is loaded.
TaskNames = Annotated[list[str], AfterValidator(known_tasks)]


class ModelConfig(StrictModel):
    spec: str = Field("embedded:smollm2-135m-instruct",
                      description="embedded:<name>, tiny-random, a local HF directory, or a hub id")
    dtype: str = Field("auto", description="auto = bf16 on GPU, fp32 on CPU; or float32/bfloat16/float16")
    device: str | None = Field(None, description="cpu, cuda, cuda:1; None picks cuda when available")
    trust_remote_code: bool = Field(False, description="run code shipped with a hub model (off by default)")


class RaySection(StrictModel):
    """How every stage reaches Ray and sizes its workers: the same keys in each stage config (`ray:`),
    so a sweep, a `ray job submit` entrypoint and a KubeRay RayJob set them the same way."""

    enabled: bool = Field(True, description="run through Ray (False: in this process, no Ray at all)")
    address: str | None = Field(None, description="cluster address (ray://, host:port, auto); None = the job's "
                                "cluster (RAY_ADDRESS) or a new local instance")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a new local instance (None: all; ignored "
                                 "when joining a cluster)")
    num_gpus: int | None = Field(None, ge=0, description="GPUs of a new local instance (None: detected)")
    workers: int = Field(1, ge=1, description="workers of the stage: Ray Train workers, scoring or teacher actors")
    cpus_per_worker: float = Field(1, gt=0, description="CPUs reserved per worker")
    gpus_per_worker: float = Field(0, ge=0, description="GPUs reserved per worker (0: CPU only)")


class TrainRaySection(RaySection):
    """A training stage's Ray Train workers also choose how they spread over the cluster's nodes."""

    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="Ray placement group strategy of the Ray Train workers: PACK fills one node first "
        "(fewest network hops), SPREAD prefers distinct nodes, STRICT_SPREAD requires one node per worker "
        "(the run waits until that many nodes have room), STRICT_PACK requires a single node")


class EvalRaySection(RaySection):
    """Evaluation's scoring actors hold a model each: two CPUs per actor by default."""

    cpus_per_worker: float = Field(2, gt=0, description="CPUs reserved per scoring actor")


def _has_path(data: dict, dotted: str) -> bool:
    """Whether `data` holds the dotted key (sections that are not mappings are skipped)."""
    node: object = data
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


class RenamedKeyError(ConfigError):
    """An old config key: the message names the new one (raised inside validation, reported as is)."""


class StageConfig(StrictModel):
    """Base of every stage config: `renamed_keys` (old dotted key -> new key) turns an old spelling
    into an error naming the new one, instead of pydantic's generic "extra inputs" message."""

    renamed_keys: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _refuse_renamed_keys(cls, data: object) -> object:
        if isinstance(data, dict):
            old = [key for key in cls.renamed_keys if _has_path(data, key)]
            if old:
                raise RenamedKeyError("; ".join(f"{key} was renamed to {cls.renamed_keys[key]}" for key in old))
        return data


class GenerationConfig(StrictModel):
    """FLARE uses greedy decoding with no stop string, capped at lm-eval's 256 new tokens."""

    max_new_tokens_classification: int = Field(256, ge=1)
    max_new_tokens_headlines: int = Field(256, ge=1)
    max_new_tokens_ner: int = Field(256, ge=1)
    max_batch: int = Field(32, ge=1)

    def for_kind(self, kind: str) -> int:
        return getattr(self, f"max_new_tokens_{kind}")


class EvalConfig(StageConfig):
    renamed_keys: ClassVar[dict[str, str]] = {
        "ray.concurrency": "ray.workers", "ray.num_cpus_per_actor": "ray.cpus_per_worker",
        "ray.num_gpus_per_actor": "ray.gpus_per_worker", "ray.batch_size": "batch_rows (top level)"}

    model: ModelConfig = ModelConfig()
    tasks: TaskNames = Field(["fpb", "fiqasa", "headlines", "ner"], description="built-in task names")
    task_files: list[str] = Field([], description="YAML specs of user-defined tasks (local or s3://)")
    split: Literal["test", "valid"] = "test"
    limit: int | None = Field(None, ge=1, description="per task: samples (Headlines: headlines x 9 questions), seeded")
    task_limits: dict[str, PositiveInt] = Field({}, description="per-task limit overriding `limit`, e.g. {headlines: 40}")
    seed: int = 0
    modes: list[Literal["choice", "compat", "robust"]] = ["choice", "compat", "robust"]
    wrapper: Literal["raw", "chat", "finma"] = Field("chat", description="how the FLARE query is shown to the model")
    max_length: int = Field(1024, ge=16, description="prompt tokens kept (from the end) — never silently overflow")
    token_budget: int = Field(4096, ge=64, description="padded tokens per forward batch")
    ner_last_token_quirk: bool = Field(True, description="reproduce FLARE's NER last-token bug in compat mode")
    generation: GenerationConfig = GenerationConfig()
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples for 95% CIs (0 = off)")
    batch_rows: int = Field(256, ge=1, description="rows per map_batches call (sorted by length inside)")
    ray: EvalRaySection = Field(EvalRaySection(), description="scoring actors: workers x cpus/gpus_per_worker "
                                "(enabled: false scores in-process)")
    output_dir: str = Field("results/eval", description="local dir or s3:// URI for results.json/.md/.png")

    @field_validator("modes")
    @classmethod
    def _modes_not_empty(cls, value: list[str]) -> list[str]:
        return unique_non_empty(value, "mode")

    @model_validator(mode="after")
    def _limits_name_evaluated_tasks(self) -> "EvalConfig":
        if not self.tasks and not self.task_files:
            raise ValueError("no task to evaluate: set tasks and/or task_files")
        if not self.task_files:  # user-defined task names are known only once their specs are read
            unknown = sorted(set(self.task_limits) - set(self.tasks))
            if unknown:
                raise ValueError(f"task_limits names tasks that are not evaluated: {unknown} (tasks: {self.tasks})")
        return self


Cfg = TypeVar("Cfg", bound=BaseModel)


def _hashes(value: object) -> int:
    """How many `#` survive in the parsed value (keys and strings, recursively)."""
    if isinstance(value, str):
        return value.count("#")
    if isinstance(value, dict):
        return sum(_hashes(k) + _hashes(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(_hashes(v) for v in value)
    return 0


def parse_override(item: str) -> tuple[list[str], object]:
    """`a.b=3` -> (["a", "b"], 3); the value is parsed as YAML so lists and numbers keep their type.

    A value YAML would cut at a comment (`out/run #2` -> `out/run`) is refused rather than truncated."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {' '.join(str(err).split())}") from None
    if raw.count("#") > _hashes(value):
        dropped = raw[re.search(r"(^|\s)#", raw).start():].strip() if re.search(r"(^|\s)#", raw) else "#"
        raise ConfigError(f"override {item!r}: YAML reads {dropped!r} as a comment and would drop it; "
                          f"quote the value ({key.strip()}='...') to keep the '#'")
    return key.strip().split("."), value


def _set(data: dict, keys: list[str], value: object, what: str) -> None:
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{what}: {key} is not a section")
    node[keys[-1]] = value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for item in overrides:
        keys, value = parse_override(item)
        _set(data, keys, value, f"override {item!r}")
    return data


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict:
    """A YAML file whose top level is a mapping; a missing file, bad YAML or another top level is a
    ConfigError naming the file (`what` says which kind of file was expected)."""
    file = Path(path)
    if not file.exists():
        raise ConfigError(f"{what} {file} does not exist")
    try:
        data = yaml_load(file.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{file}: not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: top level must be a mapping, got {type(data).__name__}")
    return data


def load_config(cls: type[Cfg], path: str | Path | None = None, overrides: list[str] | None = None,
                values: dict[str, object] | None = None) -> Cfg:
    """Read YAML (optional), apply `key=value` overrides, then `values` (dotted key -> typed value, from
    CLI flags: taken as given, never parsed as YAML; None entries skipped), validate.
    Errors name the field and the file."""
    source = str(path) if path else "<defaults>"
    data: dict = read_yaml_mapping(path, "config file") if path else {}
    data = apply_overrides(data, overrides or [])
    for dotted, value in (values or {}).items():
        if value is not None:
            _set(data, dotted.split("."), value, f"option {dotted}")
    return validate(cls, data, source)


def validate(cls: type[Cfg], data: dict, source: str) -> Cfg:
    """`cls.model_validate(data)`; every problem in one ConfigError naming `source` and the fields."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        renamed = [e["ctx"]["error"] for e in err.errors() if isinstance(e.get("ctx", {}).get("error"), RenamedKeyError)]
        if renamed:
            raise RenamedKeyError(f"{source}: " + "; ".join(str(r) for r in renamed)) from None
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']} (got {e.get('input')!r})"
            for e in err.errors()
        )
        raise ConfigError(f"{source}: invalid {cls.__name__}: {problems}") from None


def dump_config(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def entrypoint_config(cls: type[Cfg], doc: str, default_config: str, argv: list[str] | None = None) -> Cfg | None:
    """`--config FILE key.sub=value ...` for the `pipelines/*.py` entrypoints; None (after printing
    the error) when the config is invalid, so the script can exit with status 2."""
    import argparse
    import logging
    import sys

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=default_config, help=f"{cls.__name__} YAML")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return load_config(cls, args.config, args.overrides)
    except ConfigError as err:
        from finadapt.errors import one_line

        print(one_line(err), file=sys.stderr)
        return None
