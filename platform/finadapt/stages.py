"""One registry of stages, so the CLI, `python pipelines/<stage>.py` (and `ray job submit`), a sweep trial
and a KubeRay RayJob all build a stage the same way: a typed config from YAML + dotted overrides, then
the stage's run function.

Config classes and run functions may be given as `"module:attr"` strings, imported on first use: the
registry is read by `finadapt --help` and must not pull in Ray or torch.
"""
from __future__ import annotations

import importlib
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel

from finadapt.config import ConfigError, load_config
from finadapt.train.config import SCORE


def _resolve(target):
    """A `"module:attr"` string -> the attribute; anything else as is."""
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Stage:
    """A stage: its config class, the function that runs it (config -> exit code, summary printed) and
    the primary metric a sweep optimises (dotted key of the stage's summary, and min or max)."""

    name: str
    config_class: type[BaseModel] | str
    run: Callable[[BaseModel], int] | str
    metric: tuple[str, Literal["min", "max"]]
    default_config: str | None = None
    help: str = ""

    def config_type(self) -> type[BaseModel]:
        return _resolve(self.config_class)

    def run_function(self) -> Callable[[BaseModel], int]:
        return _resolve(self.run)


STAGES: dict[str, Stage] = {}


def register_stage(stage: Stage, replace: bool = False) -> Stage:
    """Add a stage (the sweep registers itself this way); a second stage of the same name is refused
    unless `replace`."""
    if stage.name in STAGES and not replace:
        raise ConfigError(f"stage {stage.name!r} is already registered")
    STAGES[stage.name] = stage
    return stage


def get_stage(name: str) -> Stage:
    if name not in STAGES:
        raise ConfigError(f"unknown stage {name!r}; known: {', '.join(sorted(STAGES))}")
    return STAGES[name]


def build_config(name: str, path: str | Path | None = None, overrides: list[str] | None = None,
                 values: dict[str, object] | None = None) -> BaseModel:
    """The stage's config from YAML `path` (None: built-in defaults), `key.sub=value` overrides (YAML
    values), then `values` (dotted key -> typed value, taken as given). Errors name the file and key."""
    return load_config(get_stage(name).config_type(), path, overrides, values)


def run_entrypoint(name: str, argv: list[str] | None = None) -> int:
    """`python pipelines/<stage>.py [--config FILE] [key.sub=value ...]`: build, run, exit code.
    A finadapt error is one line on stderr (2: config/input/output location, 1: the run failed)."""
    import argparse

    from finadapt.errors import FinadaptError, report

    stage = get_stage(name)
    parser = argparse.ArgumentParser(prog=f"pipelines/{name}", description=stage.help)
    parser.add_argument("--config", "-c", default=stage.default_config,
                        help=f"{stage.config_type().__name__} YAML (default: {stage.default_config})")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return stage.run_function()(build_config(name, args.config, args.overrides))
    except FinadaptError as err:  # one line naming the place; the traceback is in the log file
        return report(err)


# --------------------------------------------------------------------------- the built-in stages' runs
def run_eval(cfg) -> int:
    """Exit 2 when a task's spec or data is broken (the other tasks are still scored and written)."""
    from finadapt.evaluate.api import evaluate
    from finadapt.evaluate.report import markdown_table

    _, results = evaluate(cfg)
    print(markdown_table(results))
    print(f"results.json, results.md, results.png and predictions.jsonl written to {cfg.output_dir}")
    for failed in results["failed_tasks"]:
        print(f"failed task {failed['task']}: {' '.join(failed['error'].split())}", file=sys.stderr)
    return 2 if results["failed_tasks"] else 0


def run_corpus_stage(cfg) -> int:
    from finadapt.data import pipeline
    from finadapt.data.report import corpus_report_markdown

    manifest = pipeline.run_corpus(cfg)
    print(corpus_report_markdown(manifest))
    print(f"shards, manifest.json and report.md written to {cfg.output_dir}")
    return 0


def run_synth(cfg) -> int:
    from finadapt import synth
    from finadapt.synth.report import markdown

    summary = synth.synthesize(cfg)
    print(markdown(summary, summary))
    print(json.dumps(summary["totals"], indent=2))
    print(f"synthetic.jsonl, quarantine.jsonl and the report written to {cfg.output_dir}")
    return 0


def run_train(cfg) -> int:
    from finadapt.train import cli_support

    return cli_support.run_stage(cfg)


for _stage in (
    Stage("eval", "finadapt.config:EvalConfig", run_eval, ("score", "max"), "pipelines/configs/evaluate.yaml",
          "FLARE evaluation (metric: mean primary score over the tasks)"),
    Stage("corpus", "finadapt.data.pipeline:CorpusConfig", run_corpus_stage, ("packing.tokens", "max"),
          "pipelines/configs/corpus.yaml", "Corpus stage: packed pre-training shards from raw corpora"),
    Stage("synth", "finadapt.synth.config:SynthConfig", run_synth, ("totals.acceptance_rate", "max"),
          "pipelines/configs/synth.yaml", "Synthetic instructions from a teacher model"),
    Stage("pretrain", "finadapt.train.config:PretrainConfig", run_train, SCORE["pretrain"],
          "pipelines/configs/pretrain.yaml", "Stage 1: further pre-training on packed corpus shards"),
    Stage("sft", "finadapt.train.config:SftConfig", run_train, SCORE["sft"],
          "pipelines/configs/sft.yaml", "Stage 2: instruction tuning on FLARE training data"),
    Stage("reproduce", "finadapt.reproduce.config:ReproduceConfig", "finadapt.reproduce.cli:run_reproduce_stage",
          ("final_mean", "max"), "pipelines/configs/reproduce_demo.yaml",
          "The paper end to end as keyed, resumable steps, and its ablation report"),
):
    register_stage(_stage)
