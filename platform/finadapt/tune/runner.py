"""Build and run the Tuner: checks before any trial (space edges, pool size, step plan), fit or
`--resume`, leftover placement groups removed, trial records written.

Why a pool precheck: every trial draws its synthetic share from the one pool; a pool too small for the
highest ratio would fail trial after trial, minutes in. Here it fails at once, with the numbers.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from pathlib import Path

from finadapt import storage
from finadapt.config import ConfigError
from finadapt.errors import FinadaptError
from finadapt.train.config import SftConfig
from finadapt.tune.config import Sweep
from finadapt.tune.records import TrialRecord, save_records
from finadapt.tune.space import apply_params, edge_configs, validate_space
from finadapt.tune.trial import TrialContext, run_trial, trial_overrides

log = logging.getLogger(__name__)

METRIC = "objective"
RECORDS_FILE = "records.jsonl"
HISTORY_KEYS = ("step", "loss", "objective", "diverged", "planned_steps", "timestamp")


# ---------------------------------------------------------------- checks before any trial
def planned_steps(cfg: SftConfig) -> tuple[int, dict]:
    """(optimizer steps, rows per task) the trial with this config will plan, from the sample counts
    alone (no tokenizing). Building the samples also mixes the synthetic share: a pool too small
    for the ratio fails here."""
    from finadapt.train.data import plan_steps
    from finadapt.train.sft_data import training_samples

    samples = training_samples(cfg.data, cfg.seed)
    per_task: dict[str, int] = {}
    for s in samples:
        per_task[s.task] = per_task.get(s.task, 0) + 1
    return plan_steps(cfg, len(samples), cfg.workers)["total_steps"], per_task


def precheck(sweep: Sweep) -> int:
    """Validate every edge config; check the synthetic pool holds enough samples per task for the
    highest ratio; return ASHA's max_t (the most steps any trial plans)."""
    configs = validate_space(sweep.space, sweep.base)
    most = 0
    for params, cfg in zip(edge_configs(sweep.space), configs):
        try:
            steps, _ = planned_steps(cfg)
        except FinadaptError as err:
            shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
            pool = ", ".join(cfg.data.synthetic_jsonl) or "no data.synthetic_jsonl"
            raise ConfigError(f"{sweep.space.source}: {shown}: a trial could not build its data "
                              f"(synthetic pool: {pool}): {err}") from None
        most = max(most, steps)
    return most


# ---------------------------------------------------------------- Ray + Tuner
def connect(sweep: Sweep) -> None:
    """The sweep's Ray connection, like every stage's. The split guard needs no runtime env: each trial
    forbids test reads in its own process and hands the ban to its Ray Train workers with the
    training config (train.run.fit_with_ray), on a laptop and on a cluster alike."""
    from finadapt.ray_connect import connect as shared_connect

    shared_connect(sweep.cfg.ray)


def _storage(root_parent: str) -> dict:
    if storage.is_s3(root_parent):
        fs, path = storage.filesystem_for(root_parent)
        return {"storage_path": path, "storage_filesystem": fs}
    return {"storage_path": root_parent}


def trainable(sweep: Sweep):
    from ray import tune

    context = TrialContext(sweep_name=sweep.cfg.name, root=sweep.root, base=sweep.base,
                           objective=sweep.cfg.objective, trial_env=dict(sweep.cfg.trial_env))
    res = sweep.cfg.trial_resources
    return tune.with_resources(tune.with_parameters(run_trial, context=context), {"cpu": res.cpu, "gpu": res.gpu})


def param_space(sweep: Sweep) -> dict:
    space = sweep.space
    if sweep.cfg.searcher == "grid":
        continuous = [p.key for p in space.params if p.kind not in ("grid", "choice")]
        if continuous:
            raise ConfigError(f"{space.source}: searcher grid needs grid/choice params; {continuous} are ranges")
        from ray import tune

        return {p.key: tune.grid_search(list(p.values)) for p in space.params}
    if sweep.cfg.searcher == "optuna":
        grids = [p.key for p in space.params if p.kind == "grid"]
        if grids:
            raise ConfigError(f"{space.source}: searcher optuna cannot take grid params {grids}; use choice")
    return space.to_tune()


def search_alg(sweep: Sweep):
    if sweep.cfg.searcher != "optuna":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        # max_concurrent here: Tune ignores TuneConfig.max_concurrent_trials for a generator instance
        return BasicVariantGenerator(max_concurrent=sweep.cfg.max_concurrent_trials, random_state=sweep.cfg.seed)
    try:
        import optuna  # noqa: F401
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        raise ConfigError(f"{sweep.source}: searcher optuna needs the optuna package "
                          "(pip install optuna); or use searcher random/grid") from None
    import optuna

    return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=sweep.cfg.seed))


def scheduler(sweep: Sweep, max_t: int):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    s = sweep.cfg.scheduler
    if s.kind == "none":
        return FIFOScheduler()
    if s.grace_period_steps > max_t:
        raise ConfigError(f"{sweep.source}: scheduler.grace_period_steps {s.grace_period_steps} exceeds the "
                          f"most steps a trial plans ({max_t})")
    # stop_last_trials=False: a trial reaching max_t must not be stopped before it exports its model
    return ASHAScheduler(time_attr="step", max_t=max_t, grace_period=s.grace_period_steps,
                         reduction_factor=s.reduction_factor, stop_last_trials=False)


def build_tuner(sweep: Sweep, max_t: int, resume: bool = False):
    from ray import tune

    parent = str(Path(sweep.root).parent) if not storage.is_s3(sweep.root) else sweep.root.rsplit("/", 1)[0]
    if resume or tune.Tuner.can_restore(sweep.root):
        if not resume:
            raise ConfigError(f"{sweep.source}: a sweep named {sweep.cfg.name!r} exists at {sweep.root}; "
                              "continue it with --resume or choose another name")
        if not tune.Tuner.can_restore(sweep.root):
            raise ConfigError(f"{sweep.source}: --resume: no sweep to resume at {sweep.root}")
        extra = {"storage_filesystem": _storage(parent)["storage_filesystem"]} if storage.is_s3(parent) else {}
        return tune.Tuner.restore(sweep.root, trainable(sweep), resume_unfinished=True, resume_errored=True,
                                  **extra)
    return tune.Tuner(
        trainable(sweep), param_space=param_space(sweep),
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", scheduler=scheduler(sweep, max_t),
                                    search_alg=search_alg(sweep), num_samples=sweep.cfg.num_samples,
                                    max_concurrent_trials=(sweep.cfg.max_concurrent_trials
                                                           if sweep.cfg.searcher == "optuna" else None)),
        # No fail_fast: Ray 2.60 restores a fail_fast experiment without re-running its errored trials.
        run_config=tune.RunConfig(name=sweep.cfg.name, **_storage(parent), verbose=1))


# ---------------------------------------------------------------- placement groups (ray-project/ray#54305)
def live_placement_groups() -> dict[str, dict]:
    import ray.util

    return {pg_id: info for pg_id, info in ray.util.placement_group_table().items()
            if info.get("state") not in ("REMOVED",)}


def remove_leftover_placement_groups(before: set[str]) -> list[dict]:
    """Placement groups created during the sweep and still alive after it (a stopped trial's Train
    worker group can leave its group behind): log and remove them; returns what was found."""
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    import ray

    job = ray.get_runtime_context().get_job_id()  # a placement group id ends with its job's id:
    leftovers = [{"id": pg_id, "name": info.get("name"), "state": info.get("state"),  # only this sweep's
                  "bundles": info.get("bundles")} for pg_id, info in live_placement_groups().items()
                 if pg_id not in before and pg_id.endswith(job)]
    for pg in leftovers:
        log.warning("placement group %s (%s, %s) left behind by the sweep: removing it", pg["id"], pg["name"],
                    pg["state"])
        remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(pg["id"]))))
    if not leftovers:
        log.info("no placement group left behind by the sweep's trials")
    return leftovers


# ---------------------------------------------------------------- results -> records
def _clean(value):
    if hasattr(value, "item"):
        value = value.item()
    return value


def _history(result) -> list[dict]:
    """Every report the trial made, its step, loss, objective and validation scores; the NaN cells
    pandas fills for reports without validation are dropped (a real NaN score stays)."""
    frame = result.metrics_dataframe
    if frame is None or frame.empty:
        return []
    rows = []
    for row in frame.to_dict("records"):
        entry = {k: _clean(v) for k, v in row.items()
                 if (k in HISTORY_KEYS or (str(k).startswith("val_") and k != "val_seconds")) and v is not None}
        evaluated = isinstance(entry.get("objective"), (int, float)) and not math.isnan(entry["objective"])
        if not evaluated:
            entry.pop("objective", None)
            entry = {k: v for k, v in entry.items()
                     if not (str(k).startswith("val_") and isinstance(v, float) and math.isnan(v))}
        rows.append(entry)
    return rows


def to_record(result, sweep: Sweep, params_keys: list[str]) -> TrialRecord:
    trial_id = _trial_id(result)
    config = dict(result.config or {})
    params_file = storage.join(str(result.path), "params.json")
    if any(k not in config for k in params_keys) and storage.exists(params_file):
        config.update(json.loads(storage.read_text(params_file)))  # a trial that failed before reporting
    params = {k: _clean(config[k]) for k in params_keys if k in config}
    history = _history(result)
    steps_run = max((int(h["step"]) for h in history if "step" in h), default=0)
    planned = max((int(h["planned_steps"]) for h in history if "planned_steps" in h), default=0)
    wall = 0.0
    frame = result.metrics_dataframe
    if frame is not None and not frame.empty and "time_total_s" in frame:
        wall = float(frame["time_total_s"].max())
    evals = [h for h in history if "objective" in h and any(str(k).startswith("val_") for k in h)]
    last = evals[-1] if evals else {}
    final = {k: float(v) for k, v in last.items() if str(k).startswith("val_") and k != "val_seconds"}
    if history and "objective" in history[-1]:
        final["objective"] = float(history[-1]["objective"])
    elif last:
        final["objective"] = float(last["objective"])
    if result.error is not None:
        status = "error"
    elif planned and steps_run < planned:
        status = "stopped_early"
    else:
        status = "completed"
    out_dir = trial_overrides(sweep.root, trial_id)["output_dir"]
    model_dir = storage.join(out_dir, "best")
    return TrialRecord(trial_id=trial_id, params=params, history=history, status=status, steps_run=steps_run,
                       planned_steps=planned, wall_seconds=wall, final_scores=final, run_dir=str(result.path),
                       model_dir=model_dir if status != "error" and storage.exists(storage.join(model_dir,
                                                                                               "config.json"))
                       else None,
                       error=None if result.error is None else " ".join(str(result.error).split())[:2000])


def _trial_id(result) -> str:
    """Tune's trial id (`<5 hex>_<5 digits>`): from the results, else from the trial directory name."""
    trial_id = (result.metrics or {}).get("trial_id")
    if trial_id:
        return str(trial_id)
    found = re.search(r"(?:^|_)([0-9a-f]{5}_\d{5})(?:_|$)", os.path.basename(str(result.path).rstrip("/")))
    return found.group(1) if found else os.path.basename(str(result.path).rstrip("/"))


def fit(sweep: Sweep, resume: bool = False) -> tuple[list[TrialRecord], dict]:
    """Run (or resume) the sweep; returns the trial records and facts about the run."""
    max_t = precheck(sweep)
    connect(sweep)
    tuner = build_tuner(sweep, max_t, resume)
    before = set(live_placement_groups())
    # Reports without validation carry no objective; ASHA skips them, Tune must not call them errors.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    t0 = time.perf_counter()
    try:
        grid = tuner.fit()
    except Exception as err:  # noqa: BLE001 - TuneError: the experiment itself failed (trials may have run)
        from ray.tune.error import TuneError

        if not isinstance(err, TuneError):
            raise
        log.warning("sweep interrupted: %s (continue with --resume)", err)
        grid = tune_results(sweep)
    leftovers = remove_leftover_placement_groups(before)
    records = [to_record(result, sweep, sweep.space.keys()) for result in grid]
    records.sort(key=lambda r: r.trial_id)
    save_records(records, storage.join(sweep.root, RECORDS_FILE))
    return records, {"max_t": max_t, "fit_seconds": time.perf_counter() - t0, "leftover_placement_groups": leftovers,
                     "resumed": resume}


def tune_results(sweep: Sweep):
    """The sweep's results read from its experiment state, without restoring the Tuner (a restore
    would save the state again, with its own idea of the errored trials)."""
    from ray.tune import ExperimentAnalysis, ResultGrid

    parent = sweep.root.rsplit("/", 1)[0]
    extra = {"storage_filesystem": _storage(parent)["storage_filesystem"]} if storage.is_s3(parent) else {}
    return ResultGrid(ExperimentAnalysis(sweep.root, **extra))
