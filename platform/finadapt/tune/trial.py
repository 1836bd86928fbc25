"""One sweep trial: the sampled params applied to the base stage config, then the real stage-2
training on Ray Train, its rank-0 reports forwarded to Tune with the objective attached.

Each trial builds its own training set (the ratio changes the data and the step plan) from the one
shared synthetic pool named by the base config, under its own run name and directories.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback

from finadapt import storage
from finadapt.config import validate
from finadapt.tasks import split_guard
from finadapt.train.config import SftConfig
from finadapt.tune.config import ObjectiveSection
from finadapt.tune.metrics import SweepGauges
from finadapt.tune.objective import ObjectiveTracker
from finadapt.tune.space import apply_params

log = logging.getLogger(__name__)

# Test hooks (read in the trial process; set through the sweep's trial_env): make the trial with this
# index fail before training, or read "<task>:<split>" before training (to prove the split guard).
FAIL_INDEX_ENV = "FINADAPT_TEST_TRIAL_FAIL_INDEX"
READ_SPLIT_ENV = "FINADAPT_TEST_TRIAL_READ"


@dataclass
class TrialContext:
    """What every trial of a sweep shares (sent once through the object store)."""

    sweep_name: str
    root: str  # <storage_path>/<name>
    base: dict
    objective: ObjectiveSection
    trial_env: dict[str, str] = field(default_factory=dict)


def trial_overrides(root: str, trial_id: str) -> dict[str, Any]:
    """The keys a trial sets itself: its own run name, checkpoint storage and output dir."""
    return {"checkpoint.name": f"trial-{trial_id}", "checkpoint.storage_path": storage.join(root, "trials"),
            "output_dir": storage.join(root, "trials", trial_id, "out")}


def trial_config(context: TrialContext, params: dict[str, Any], trial_id: str) -> SftConfig:
    data = apply_params(context.base, {**params, **trial_overrides(context.root, trial_id)})
    return validate(SftConfig, data, f"trial {trial_id}")


def trial_index(trial_id: str) -> int:
    """Tune's trial ids end in a zero-padded creation index (`4f2a1_00003` -> 3)."""
    tail = trial_id.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else -1


class SweepReportCallback(TuneReportCallback):
    """TuneReportCallback plus the objective, the planned steps and the sweep gauges: runs in the Ray
    Train controller, sees every rank-0 report in order."""

    def __init__(self, objective: ObjectiveSection, sweep_name: str, trial_id: str):
        super().__init__()
        self.tracker = ObjectiveTracker(objective)
        self.sweep_name, self.trial_id = sweep_name, trial_id
        self._gauges: SweepGauges | None = None

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        report = dict(metrics[0])
        plan = (run_context.train_loop_config or {}).get("plan") or {}
        if "total_steps" in plan:
            report["planned_steps"] = plan["total_steps"]
        value = self.tracker.update(report)
        if value is not None:
            report["objective"] = value
        report["diverged"] = self.tracker.diverged
        if checkpoint:
            report[CHECKPOINT_PATH_KEY] = checkpoint.path
        if self._gauges is None:
            self._gauges = SweepGauges(self.sweep_name, self.trial_id)
        self._gauges.update(report)
        self._training_actor_item_queue.put(report)


def _test_hooks(trial_id: str) -> None:
    fail = os.environ.get(FAIL_INDEX_ENV)
    if fail and trial_index(trial_id) == int(fail):
        raise RuntimeError(f"trial {trial_id}: failing on purpose ({FAIL_INDEX_ENV}={fail})")
    read = os.environ.get(READ_SPLIT_ENV)
    if read:
        from finadapt.tasks import load_samples

        task, split = read.split(":")
        load_samples(task, split)


def run_trial(config: dict, context: TrialContext) -> None:
    """The Tune function trainable (`config`: dotted param -> sampled value)."""
    from ray import tune

    from finadapt.train.run import run_training

    split_guard.forbid(["test"])  # before any data is read in this process
    os.environ.update(context.trial_env)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    trial_id = tune.get_context().get_trial_id()
    _test_hooks(trial_id)
    cfg = trial_config(context, dict(config), trial_id)
    log.info("trial %s: %s", trial_id, config)
    run_training(cfg, use_ray=True, callbacks=[SweepReportCallback(context.objective, context.sweep_name, trial_id)])
