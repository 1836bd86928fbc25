"""The end-to-end reproduction config (`pipelines/configs/reproduce_*.yaml`).

Each step reuses a stage's own config file (the same YAML `finadapt <stage> -c` reads) plus dotted
overrides, so a reproduction never invents a second way to configure a stage; the runner only sets
where each step reads its inputs from and writes its outputs to.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from finadapt.config import RaySection, StageConfig, StrictModel

VARIANTS = ("a", "b", "c", "d", "e", "f")
VARIANT_LABELS = {
    "a": "base zero-shot",
    "b": "stage 2, real",
    "c": "stage 2, real + synthetic",
    "d": "stage 1 + stage 2, real",
    "e": "stage 1 + stage 2, real + synthetic",
    "f": "final recipe",
}
# What each trained variant is made of: (starts from the stage-1 model, mixes in synthetic data).
VARIANT_RECIPES = {"b": (False, False), "c": (False, True), "d": (True, False), "e": (True, True)}


class StepSource(StrictModel):
    """A stage config for a step: the stage's YAML file plus `key.sub: value` overrides."""

    config: str | None = Field(None, description="the stage's YAML (e.g. pipelines/configs/sft_demo.yaml); "
                               "None: the stage's built-in defaults")
    set: dict[str, Any] = Field({}, description="dotted key -> value, applied over the file")


class FinalSection(StepSource):
    """Row (f): the best ablation variant's recipe, on all training data with the budget left."""

    recipe_from: str | None = Field(
        None, description="a sweep's best.yaml (finadapt sweep); when the file exists its `recipe_keys` "
        "(learning rate, synthetic ratio, ...) override the stage-2 base. Missing file: the base values")
    recipe_keys: list[str] = Field(["optim.lr", "data.synthetic_ratio"],
                                   description="dotted keys taken from recipe_from")
    variant: Literal["auto", "b", "c", "d", "e"] = Field(
        "auto", description="whose recipe (stage 1 or not, synthetic or not) row (f) uses; auto = the "
        "variant with the best mean validation score (never a test score)")


class ReproduceConfig(StageConfig):
    """Every stage of the paper as keyed, resumable steps, and the ablation table they produce."""

    renamed_keys: ClassVar[dict[str, str]] = {}

    name: str = Field("reproduce", pattern=r"^[A-Za-z0-9_.-]+$", description="names commits and reports")
    results_dir: str = Field("results/reproduce", description="small outputs of every step (committed)")
    work_dir: str = Field("runs/reproduce", description="shards, synthetic pool, checkpoints, model weights "
                          "(not committed; a step that needs a missing one re-creates it)")
    keep_checkpoints: bool = Field(False, description="keep a finished training step's Ray Train checkpoints "
                                   "(optimizer state, ~1.5 GB each for the 135M model); its exported best "
                                   "model stays in the work dir either way")
    commit: bool = Field(False, description="git commit each step's results as soon as it finishes")
    base_model: str = Field("embedded:smollm2-135m-instruct", description="the model every row starts from "
                            "(row (a) scores it as is; stage 1 and the stage-2 rows without stage 1 train it)")
    variants: list[Literal["a", "b", "c", "d", "e", "f"]] = Field(list(VARIANTS),
                                                               description="ablation rows to produce")
    seeds: list[int] = Field([0, 1], description="training seeds of rows (b) and (f); the others use the first")
    synthetic_ratio: float | dict[str, float] = Field(
        0.5, description="synthetic samples per real sample in rows (c) and (e) (per task if a map)")
    ray: RaySection = Field(RaySection(num_cpus=2), description="the Ray instance every step runs on "
                            "(steps keep their own worker sizes)")
    corpus: StepSource = StepSource(config="pipelines/configs/corpus.yaml")
    synth: StepSource = StepSource(config="pipelines/configs/synth.yaml")
    pretrain: StepSource = StepSource(config="pipelines/configs/pretrain_demo.yaml")
    sft: StepSource = Field(StepSource(config="pipelines/configs/sft_demo.yaml"),
                            description="stage-2 base of rows (b)-(e); its model.spec is the base model")
    final: FinalSection = FinalSection(config="pipelines/configs/sft_demo.yaml")
    ablation_eval: StepSource = Field(StepSource(config="pipelines/configs/demo.yaml"),
                                      description="evaluation of rows (b)-(e): seeded test subsets")
    full_eval: StepSource = Field(StepSource(config="pipelines/configs/evaluate.yaml"),
                                  description="evaluation of rows (a) and (f): the full test sets")
    full_test: bool = Field(True, description="rows (a) and (f) on the whole test sets, whatever full_eval's "
                            "limits say (false: a demo scores them on full_eval's own seeded subsets)")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("at least one seed is needed")
        return list(dict.fromkeys(value))

    @field_validator("variants")
    @classmethod
    def _variants_in_table_order(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one of a-f")
        return [v for v in VARIANTS if v in value]  # table order, repeats dropped
