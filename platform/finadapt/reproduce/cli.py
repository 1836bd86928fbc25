"""`finadapt reproduce` and the stage-registry run function behind `pipelines/reproduce.py`."""
from __future__ import annotations

from pathlib import Path

import typer


def status_lines(out: dict) -> list[str]:
    lines = [f"reproduction at {out['results_dir']}:"]
    lines += [f"  {step:<14} {status}" for step, status in out["status"].items()]
    return lines


def run_reproduce_stage(cfg, dry_run: bool = False, max_minutes: float | None = None) -> int:
    """Run the plan, print each step's status and the final table (exit 1 if a step failed: raised)."""
    from finadapt.reproduce.report import markdown_table
    from finadapt.reproduce.runner import run_reproduce

    out = run_reproduce(cfg, dry_run=dry_run, max_minutes=max_minutes)
    print("\n".join(status_lines(out)))
    if out["report"] is not None:
        print()
        print(markdown_table(out["report"]))
        print(f"\nreport.md, report.json and ablation.png written to {out['results_dir']}")
    return 0


def reproduce_command(
    config: Path = typer.Option(Path("pipelines/configs/reproduce_demo.yaml"), "--config", "-c",
                                help="ReproduceConfig YAML (reproduce_demo / reproduce_cpu / reproduce_gpu)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list each step as skipped (finished, same key) or "
                                 "pending; runs nothing"),
    max_minutes: float = typer.Option(None, "--max-minutes", help="start no new step after this many minutes "
                                      "(a sitting's budget); re-run later to continue"),
    overrides: list[str] = typer.Option([], "--set", help="config override key.sub=value (repeatable)"),
    verbose: bool = typer.Option(True, "--verbose/--quiet"),
) -> None:
    """The paper end to end: corpus, synthetic pool, stage 1, the stage-2 ablation variants and the final
    recipe, each evaluated on FLARE; finished steps (same config, same inputs) are skipped on a re-run."""
    import logging

    from finadapt.stages import build_config

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    code = run_reproduce_stage(build_config("reproduce", config, list(overrides)), dry_run=dry_run,
                               max_minutes=max_minutes)
    if code:
        raise typer.Exit(code)

