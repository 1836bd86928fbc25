"""Ray metrics of a sweep for the dashboard/Prometheus: each trial's objective and step, tagged by trial id."""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class SweepGauges:
    """`finadapt_sweep_score` / `finadapt_sweep_step`; metrics are an extra, never a reason to fail a trial."""

    def __init__(self, sweep: str, trial_id: str):
        self.tags = {"sweep": sweep, "trial_id": trial_id}
        self._gauges = None
        try:
            from ray.util.metrics import Gauge

            keys = ("sweep", "trial_id")
            self._gauges = {"score": Gauge("finadapt_sweep_score", description="trial objective (validation)",
                                           tag_keys=keys),
                            "step": Gauge("finadapt_sweep_step", description="trial optimizer step", tag_keys=keys)}
        except Exception as err:  # noqa: BLE001 - no metrics agent, Ray not initialised
            log.debug("sweep gauges unavailable: %s", err)

    def update(self, metrics: dict) -> None:
        if not self._gauges:
            return
        try:
            if "step" in metrics:
                self._gauges["step"].set(float(metrics["step"]), tags=self.tags)
            if "objective" in metrics:
                self._gauges["score"].set(float(metrics["objective"]), tags=self.tags)
        except Exception as err:  # noqa: BLE001
            log.debug("sweep gauges not set: %s", err)
