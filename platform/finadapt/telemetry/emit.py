"""`record(name, value, **tags)`: one call for every stage to set a metric of the names table.

Why a helper: the metric object is created once per process (Ray keeps one per name), the common tags
are filled the same way everywhere, and outside Ray (stages also run with `--no-ray`, in unit tests)
it does nothing and never imports Ray. Names and tags not in the table raise at once, Ray or not;
a failure inside Ray's metrics is logged once and never fails the stage.
"""
from __future__ import annotations

import logging
import os
import sys

from finadapt.telemetry.names import STAGES, MetricSpec, UnknownMetricError, spec

log = logging.getLogger(__name__)

PIPELINE_ENV = "FINADAPT_PIPELINE"
TRIAL_ENV = "FINADAPT_TRIAL"
DEFAULT_PIPELINE = "finadapt"
TRIAL_RUN_PREFIX = "trial-"  # a sweep names each trial's training run `trial-<trial id>` (tune/trial.py)

_bound: dict[str, str] = {}
_objects: dict[str, object] = {}
_failed: set[str] = set()


def bind(pipeline: str | None = None, trial: str | None = None) -> None:
    """Process-wide defaults of the common tags (an actor gets them from its driver this way)."""
    for key, value in (("pipeline", pipeline), ("trial", trial)):
        if value:
            _bound[key] = str(value)


def context() -> dict[str, str]:
    """The common tags this process fills in: pipeline and trial (empty outside a sweep)."""
    pipeline = _bound.get("pipeline") or os.environ.get(PIPELINE_ENV) or DEFAULT_PIPELINE
    trial = _bound.get("trial") or os.environ.get(TRIAL_ENV) or _tune_trial_id()
    return {"pipeline": pipeline, "trial": trial}


def trial_from_run_name(run_name: str) -> str:
    """A sweep trial's id from its training run name (`trial-<id>`); '' for any other run."""
    return run_name[len(TRIAL_RUN_PREFIX):] if run_name.startswith(TRIAL_RUN_PREFIX) else ""


def _tune_trial_id() -> str:
    if "ray.tune" not in sys.modules:  # never import Tune just to find out we are not in a trial
        return ""
    try:
        import warnings

        import ray.tune

        with warnings.catch_warnings():  # a Ray Train worker outside Tune: Ray warns, the answer is just None
            warnings.simplefilter("ignore")
            return ray.tune.get_context().get_trial_id() or ""
    except Exception:  # noqa: BLE001 - not inside a Tune session
        return ""


def ray_active() -> bool:
    """Ray is imported and initialised in this process (never imports Ray itself)."""
    ray = sys.modules.get("ray")
    return bool(ray is not None and getattr(ray, "is_initialized", lambda: False)())


def resolve_tags(metric: MetricSpec, tags: dict[str, object]) -> dict[str, str]:
    """Every tag key of `metric` with a string value; raises on keys outside the table or a wrong stage."""
    unknown = set(tags) - set(metric.tag_keys)
    if unknown:
        raise UnknownMetricError(f"metric {metric.name!r} has no tag(s) {sorted(unknown)}; its tags are "
                                 f"{list(metric.tag_keys)} (finadapt.telemetry.names)")
    stage = tags.get("stage") or metric.stage
    if metric.stage is not None and stage != metric.stage:
        raise UnknownMetricError(f"metric {metric.name!r} belongs to stage {metric.stage!r}, not {stage!r}")
    if stage not in STAGES:
        raise UnknownMetricError(f"metric {metric.name!r}: stage {stage!r} is not one of {STAGES}")
    resolved = {**context(), **{k: "" if v is None else str(v) for k, v in tags.items()}, "stage": stage}
    return {key: resolved.get(key, "") for key in metric.tag_keys}


def _ray_metric(metric: MetricSpec):
    obj = _objects.get(metric.name)
    if obj is None:
        from ray.util import metrics as ray_metrics

        cls = ray_metrics.Counter if metric.kind == "counter" else ray_metrics.Gauge
        obj = _objects[metric.name] = cls(metric.name, description=metric.description, tag_keys=metric.tag_keys)
    return obj


def record(name: str, value: float, **tags: object) -> bool:
    """Add `value` to a counter or set a gauge to it; True when it went to Ray's metrics.

    Counters take non-negative increments (0 records nothing: Prometheus shows no series until the
    first increment). Tags are checked against the table even when Ray is not running."""
    metric = spec(name)
    final = resolve_tags(metric, tags)
    value = float(value)
    if metric.kind == "counter" and value < 0:
        raise ValueError(f"counter {name!r} cannot decrease (got {value})")
    if not ray_active() or (metric.kind == "counter" and value == 0):
        return False
    try:
        obj = _ray_metric(metric)
        if metric.kind == "counter":
            obj.inc(value, tags=final)
        else:
            obj.set(value, tags=final)
        return True
    except Exception as err:  # noqa: BLE001 - metrics are an extra, never a reason to fail a stage
        if name not in _failed:
            _failed.add(name)
            log.warning("metric %s not recorded: %s", name, err)
        return False
