"""`finadapt sweep`: the typer command (wired into finadapt/cli.py by the lead) and the
`pipelines/sweep.py` entrypoint share `main`."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import typer

from finadapt.errors import FinadaptError, report


def summary_lines(out: dict) -> list[str]:
    lines = [f"sweep at {out['root']}: {len(out['records'])} trials"]
    for r in out["records"]:
        score = r.final_scores.get("objective")
        lines.append(f"  {r.trial_id} {r.status:<13} steps {r.steps_run}/{r.planned_steps} "
                     f"objective {score if score is not None else '-'} {r.params}")
    if out["best_yaml"]:
        lines.append(f"best trial {out['best_trial_id']}: {out['best_yaml']} (run it: finadapt sft -c <that file>)")
    if out.get("test_results"):
        lines.append(f"best model's test scores: {out['root']}/best-test/results.md")
    if out.get("leftover_placement_groups"):
        lines.append(f"removed {len(out['leftover_placement_groups'])} placement group(s) left behind by trials")
    lines.append(f"report: {out['report_dir']} (trials.csv, trials.md, summary.md, plots)")
    return lines


def main(config: str | Path, resume: bool = False, overrides: list[str] | None = None) -> int:
    """Load, run, print the summary; a finadapt error is one line (exit 2 config/input, 1 run failure)."""
    from finadapt.tune.config import load_sweep
    from finadapt.tune.sweep import run_sweep

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        out = run_sweep(load_sweep(config, overrides or []), resume=resume)
    except FinadaptError as err:
        return report(err)
    print("\n".join(summary_lines(out)))
    return 1 if out["records"] and all(r.status == "error" for r in out["records"]) else 0


def sweep_command(
    config: Path = typer.Option(..., "--config", "-c", help="sweep YAML (pipelines/configs/sweep_cpu.yaml)"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted sweep; finished trials are kept"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="key.sub=value override of the sweep config "
                                             "(repeatable; base_overrides=[...] changes the stage config)"),
    overrides: Optional[list[str]] = typer.Argument(None, help="more key.sub=value overrides"),
) -> None:
    """Ray Tune sweep over the stage-2 config (synthetic ratio, learning rate, ...), ASHA on the FLARE
    validation score; writes records, report, best.yaml and the best model's test scores."""
    code = main(config, resume, [*(set_ or []), *(overrides or [])])
    if code:
        raise typer.Exit(code)


def entrypoint(argv: list[str] | None = None) -> int:
    """`python pipelines/sweep.py --config FILE [--resume] [key=value ...]`."""
    import argparse

    parser = argparse.ArgumentParser(prog="pipelines/sweep.py", description=sweep_command.__doc__)
    parser.add_argument("--config", "-c", default="pipelines/configs/sweep_cpu.yaml")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    return main(args.config, args.resume, args.overrides)


if __name__ == "__main__":
    sys.exit(entrypoint())
