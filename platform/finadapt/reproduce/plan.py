"""Which steps a reproduction runs, in which order, and the stage config of each.

Order: corpus and synthetic pool first, the zero-shot row, stage 1, then each stage-2 variant followed
at once by its evaluation (so a model is scored while its weights are fresh and every finished pair is
committed before the next starts), the final recipe last: it is chosen from the variants' validation
scores, which exist only once they have run.
"""
from __future__ import annotations

import copy
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from finadapt import storage
from finadapt.config import ConfigError, read_yaml_mapping
from finadapt.reproduce.config import VARIANT_LABELS, VARIANT_RECIPES, ReproduceConfig, StepSource
from finadapt.stages import build_config

StepKind = Literal["corpus", "synth", "pretrain", "sft", "eval"]
TRAIN_SUMMARY = "summary.json"


@dataclass(frozen=True)
class StepSpec:
    """One step: its name (also its results folder), kind, and the steps whose work-dir output it reads."""

    name: str
    kind: StepKind
    variant: str | None = None
    seed: int | None = None
    needs: tuple[str, ...] = ()


@dataclass
class Layout:
    """Where a reproduction keeps things: small results (committed) and the work dir (not)."""

    results: Path
    work: Path

    @classmethod
    def of(cls, cfg: ReproduceConfig) -> "Layout":
        for what, value in (("results_dir", cfg.results_dir), ("work_dir", cfg.work_dir)):
            if storage.is_s3(value):
                raise ConfigError(f"{what} {value}: a reproduction keeps its step records on a local disk "
                                  "(the stages inside it may still read and write s3://)")
        return cls(Path(cfg.results_dir).expanduser().resolve(), Path(cfg.work_dir).expanduser().resolve())

    def step_results(self, step: str) -> Path:
        return self.results / step

    def step_work(self, step: str) -> Path:
        return self.work / step

    def artifact(self, spec: StepSpec) -> Path | None:
        """The work-dir output later steps read (None: the step leaves nothing they need)."""
        work = self.step_work(spec.name)
        return {"corpus": work / "shards", "synth": work / "synthetic.jsonl",
                "pretrain": work / "best", "sft": work / "best"}.get(spec.kind)


def _uses(cfg: ReproduceConfig) -> tuple[bool, bool]:
    """Whether any row needs stage 1 / the synthetic pool."""
    trained = [v for v in cfg.variants if v in VARIANT_RECIPES]
    final_from = list(VARIANT_RECIPES) if cfg.final.variant == "auto" else [cfg.final.variant]
    candidates = trained + (final_from if "f" in cfg.variants else [])
    return (any(VARIANT_RECIPES[v][0] for v in candidates), any(VARIANT_RECIPES[v][1] for v in candidates))


def plan_steps(cfg: ReproduceConfig) -> list[StepSpec]:
    stage1, synthetic = _uses(cfg)
    steps: list[StepSpec] = []
    if stage1:
        steps.append(StepSpec("corpus", "corpus"))
    if synthetic:
        steps.append(StepSpec("synth", "synth"))
    if "a" in cfg.variants:
        steps.append(StepSpec("eval-a", "eval", "a"))
    if stage1:
        steps.append(StepSpec("pretrain", "pretrain", needs=("corpus",)))
    for variant in [v for v in cfg.variants if v != "a"]:
        seeds = cfg.seeds if variant in ("b", "f") else cfg.seeds[:1]
        for seed in seeds:
            train = f"sft-{variant}-s{seed}"
            needs = ("pretrain", "synth") if variant == "f" else tuple(
                name for name, used in zip(("pretrain", "synth"), VARIANT_RECIPES[variant]) if used)
            steps.append(StepSpec(train, "sft", variant, seed, tuple(n for n in needs if any(s.name == n for s in steps))))
            steps.append(StepSpec(f"eval-{variant}-s{seed}", "eval", variant, seed, (train,)))
    return steps


def variants_summary(cfg: ReproduceConfig, steps: list[StepSpec]) -> dict[str, dict[str, Any]]:
    """plan.json's `variants`: label, train and eval steps, seeds, which test set."""
    out: dict[str, dict[str, Any]] = {}
    for variant in cfg.variants:
        mine = [s for s in steps if s.variant == variant]
        out[variant] = {"label": VARIANT_LABELS[variant],
                        "train_steps": [s.name for s in mine if s.kind == "sft"],
                        "eval_steps": [s.name for s in mine if s.kind == "eval"],
                        "seeds": sorted({s.seed for s in mine if s.seed is not None}) or [cfg.seeds[0]],
                        "test": "full" if variant in ("a", "f") and cfg.full_test else "subset"}
    return out


# --------------------------------------------------------------------------- stage configs of the steps
def stage_config(stage: str, source: StepSource, values: dict[str, Any]) -> BaseModel:
    """The stage's own YAML + the reproduction's overrides + where the runner puts things. A deep copy:
    dotted values are merged into nested sections, which must not change the reproduction's config."""
    return build_config(stage, source.config, values={**copy.deepcopy(source.set), **values})


def validation_score(layout: Layout, step: str) -> float | None:
    """A finished stage-2 step's best validation score (the checkpoint-selection score; never test)."""
    path = layout.step_results(step) / TRAIN_SUMMARY
    if not path.exists():
        return None
    value = json.loads(path.read_text()).get("best_metrics", {}).get("val_score")
    return float(value) if isinstance(value, (int, float)) else None


def choose_final_variant(cfg: ReproduceConfig, layout: Layout, steps: list[StepSpec]) -> dict[str, Any]:
    """Whose recipe row (f) trains: the configured variant, or the best mean validation score of (b)-(e)."""
    scores: dict[str, float] = {}
    for variant in VARIANT_RECIPES:
        values = [validation_score(layout, s.name) for s in steps if s.variant == variant and s.kind == "sft"]
        values = [v for v in values if v is not None]
        if values:
            scores[variant] = statistics.fmean(values)
    if cfg.final.variant != "auto":
        chosen, why = cfg.final.variant, "set in the config (final.variant)"
    elif scores:
        chosen = max(scores, key=lambda v: (scores[v], v))
        why = "best mean validation score of the ablation variants"
    else:
        chosen, why = "b", "no ablation variant has a validation score: stage 2 on real data"
    stage1, synthetic = VARIANT_RECIPES[chosen]
    return {"variant": chosen, "why": why, "validation_scores": scores, "stage1": stage1, "synthetic": synthetic}


def recipe_values(cfg: ReproduceConfig) -> tuple[dict[str, Any], str | None]:
    """The `recipe_keys` of a sweep's best.yaml (when the file exists)."""
    source = cfg.final.recipe_from
    if not source or not Path(source).exists():
        return {}, None
    data = read_yaml_mapping(source, "sweep best.yaml")
    values: dict[str, Any] = {}
    for dotted in cfg.final.recipe_keys:
        node: Any = data
        for key in dotted.split("."):
            if not isinstance(node, dict) or key not in node:
                raise ConfigError(f"final.recipe_from {source}: has no {dotted} (final.recipe_keys)")
            node = node[key]
        values[dotted] = node
    return values, source


@dataclass
class StepConfigs:
    """Builds each step's stage config (the final recipe's choice is recorded in `final_recipe`)."""

    cfg: ReproduceConfig
    layout: Layout
    steps: list[StepSpec]
    final_recipe: dict[str, Any] = field(default_factory=dict)

    def base_model(self) -> str:
        return self.cfg.base_model

    def build(self, spec: StepSpec) -> BaseModel:
        work = self.layout.step_work(spec.name)
        if spec.kind == "corpus":
            return stage_config("corpus", self.cfg.corpus, {"output_dir": str(work)})
        if spec.kind == "synth":
            return stage_config("synth", self.cfg.synth, {"output_dir": str(work)})
        if spec.kind == "pretrain":
            return stage_config("pretrain", self.cfg.pretrain, {
                "model.spec": self.base_model(), "data.shards": str(self.layout.step_work("corpus")),
                **self._train_places(spec)})
        if spec.kind == "sft":
            return self._sft(spec)
        return self._eval(spec)

    def _train_places(self, spec: StepSpec) -> dict[str, Any]:
        work = self.layout.step_work(spec.name)
        return {"output_dir": str(work), "checkpoint.storage_path": str(self.layout.work / "train"),
                "checkpoint.name": spec.name, "checkpoint.num_to_keep": 1}

    def _sft(self, spec: StepSpec) -> BaseModel:
        values: dict[str, Any] = {"seed": spec.seed, "model.spec": self.base_model(), **self._train_places(spec)}
        if spec.variant == "f":
            self.final_recipe = choose_final_variant(self.cfg, self.layout, self.steps)
            recipe, recipe_file = recipe_values(self.cfg)
            self.final_recipe.update(recipe_from=recipe_file, recipe_values=recipe)
            stage1, synthetic = self.final_recipe["stage1"], self.final_recipe["synthetic"]
            source: StepSource = self.cfg.final
        else:
            stage1, synthetic = VARIANT_RECIPES[spec.variant]
            recipe, source = {}, self.cfg.sft
        if stage1:
            values["model.spec"] = str(self.layout.step_work("pretrain") / "best")
        if synthetic:
            values["data.synthetic_jsonl"] = [str(self.layout.step_work("synth") / "synthetic.jsonl")]
            values["data.synthetic_ratio"] = self.cfg.synthetic_ratio
        else:
            values["data.synthetic_jsonl"] = []
            values["data.synthetic_ratio"] = 0.0
        applied = {k: v for k, v in recipe.items() if synthetic or k != "data.synthetic_ratio"}
        values.update(applied)
        if spec.variant == "f":
            self.final_recipe["recipe_values"] = applied  # what row (f) took from recipe_from
        return stage_config("sft", source, values)

    def _eval(self, spec: StepSpec) -> BaseModel:
        full = spec.variant in ("a", "f")
        source = self.cfg.full_eval if full else self.cfg.ablation_eval
        model = self.base_model() if spec.variant == "a" else str(self.layout.step_work(spec.needs[0]) / "best")
        values: dict[str, Any] = {"model.spec": model, "split": "test",
                                  "output_dir": str(self.layout.step_results(spec.name))}
        cfg = stage_config("eval", source, values)
        if full and self.cfg.full_test:  # the whole test sets, whatever the file's limits (None cannot travel as an override)
            cfg.task_limits = {}
            cfg.limit = None
        return cfg
