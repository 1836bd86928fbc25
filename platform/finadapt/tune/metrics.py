"""Ray metrics of a sweep for the dashboard/Prometheus: each trial's objective and step, tagged by
trial id (names in `finadapt.telemetry.names`)."""
from __future__ import annotations

from finadapt import telemetry


class SweepGauges:
    """`finadapt_sweep_trial_score` / `finadapt_sweep_trial_step` of one trial; the pipeline tag is the
    process's (FINADAPT_PIPELINE), so a sweep's trials and their training runs share it."""

    def __init__(self, sweep: str, trial_id: str):
        self.sweep = sweep
        self.tags = {"trial": trial_id}

    def update(self, metrics: dict) -> None:
        if "step" in metrics:
            telemetry.record("finadapt_sweep_trial_step", float(metrics["step"]), **self.tags)
        if metrics.get("objective") is not None:
            telemetry.record("finadapt_sweep_trial_score", float(metrics["objective"]), **self.tags)
