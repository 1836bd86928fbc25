"""Driver side of a training stage: data -> Ray Train `TorchTrainer` -> best checkpoint exported.

Running again with the same `checkpoint.name` and `checkpoint.storage_path` resumes the run from its
latest checkpoint (Ray Train V2, or the same rule without Ray) when the training config matches the
run's record (`train.identity`); `failure.max_failures` restarts a dead worker group the same way.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from finadapt import storage
from finadapt.config import ConfigError
from finadapt.tasks import split_guard
from finadapt.ray_connect import connect
from finadapt.train import identity, placement
from finadapt.train.checkpoint import copy_model_files
from finadapt.train.config import PretrainConfig, SftConfig, TrainConfig
from finadapt.train.data import plan_steps, pretrain_tables, sft_table
from finadapt.train.identity import RunInfo
from finadapt.train.loop import SCORE, Trainer, train_loop_per_worker
from finadapt.train.report import write_training_report

log = logging.getLogger(__name__)


def build_tables(cfg: TrainConfig) -> tuple[dict, dict]:
    if isinstance(cfg, PretrainConfig):
        train, val, info = pretrain_tables(cfg)
        return {"train": train, "val": val}, info
    assert isinstance(cfg, SftConfig)
    train, info = sft_table(cfg)
    return {"train": train}, info


def _storage_args(path: str) -> dict:
    """Ray Train storage: s3:// goes through pyarrow (AWS_ENDPOINT_URL / FINADAPT_S3_ENDPOINT honoured)."""
    if storage.is_s3(path):
        fs, bucket_path = storage.filesystem_for(path)
        return {"storage_path": bucket_path, "storage_filesystem": fs}
    return {"storage_path": str(Path(path).expanduser().resolve())}


def worker_resources(cfg: TrainConfig) -> dict:
    resources = {"CPU": cfg.ray.cpus_per_worker}
    if cfg.use_gpu:
        resources["GPU"] = cfg.ray.gpus_per_worker
    return resources


def warn_if_it_cannot_fit(cfg: TrainConfig, nodes: list[dict]) -> str | None:
    """Say up front when the worker group does not fit the cluster as it is (Ray Train would wait for
    it silently); a warning, not an error: an autoscaling cluster may still add the nodes."""
    problem = placement.shortfall(cfg.ray.workers, worker_resources(cfg), cfg.ray.placement_strategy, nodes)
    if problem:
        log.warning("%s: Ray Train waits until the cluster has room (ray.workers, ray.cpus_per_worker, "
                    "ray.placement_strategy in the training config)", problem)
    return problem


def fit_with_ray(cfg: TrainConfig, tables: dict, plan: dict, run: RunInfo, callbacks: list | None = None):
    """`callbacks`: Ray Train callbacks for the inner RunConfig (a Tune trial passes TuneReportCallback)."""
    import ray
    import ray.data
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    connect(cfg.ray)
    warn_if_it_cannot_fit(cfg, [n for n in ray.nodes() if n.get("Alive")])
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # same rows per worker after a restart: resumable position
    datasets = {name: ray.data.from_arrow(table) for name, table in tables.items()}
    key, mode = SCORE[cfg.stage]
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg.model_dump(mode="json"), "plan": plan, "run": run.as_worker_dict(),
                           # a split this driver may not read (a sweep trial: test) is forbidden in its workers too
                           "forbidden_splits": sorted(split_guard.forbidden_splits())},
        scaling_config=ScalingConfig(num_workers=cfg.ray.workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker=worker_resources(cfg),
                                     placement_strategy=cfg.ray.placement_strategy),
        run_config=RunConfig(
            name=cfg.checkpoint.name, **_storage_args(cfg.checkpoint.storage_path),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoint.num_to_keep,
                                               checkpoint_score_attribute=key, checkpoint_score_order=mode),
            failure_config=FailureConfig(max_failures=cfg.failure.max_failures),
            callbacks=list(callbacks or []),
        ),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split="all"),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    best = [(c, m) for c, m in (result.best_checkpoints or []) if key in m]
    if not best:
        raise RuntimeError("the run reported no checkpoint with a score; nothing to export")
    checkpoint, metrics = (min if mode == "min" else max)(best, key=lambda cm: cm[1][key])
    return checkpoint, metrics, result


def fit_locally(cfg: TrainConfig, tables: dict, plan: dict, run: RunInfo):
    """No Ray at all (GPU box without Ray, debugging): same loop, one process, same resume and
    checkpoint-keeping rules as Ray Train."""
    from finadapt.train.session import LocalSession

    key, mode = SCORE[cfg.stage]
    session = LocalSession(tables, run.directory, score=(key, mode), num_to_keep=cfg.checkpoint.num_to_keep)
    Trainer(cfg, session, plan, run=run.as_worker_dict()).fit()
    scored = [(d, m) for d, m in session.checkpoints if key in m]
    directory, metrics = (min if mode == "min" else max)(scored, key=lambda dm: dm[1][key])
    return directory, metrics, session


def _absolute(path: str) -> str:
    return path if storage.is_s3(path) else str(Path(path).expanduser().resolve())


def with_absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """Ray Train workers run in their own working directory: hand them absolute local paths."""
    update: dict = {"output_dir": _absolute(cfg.output_dir)}
    spec = cfg.model.spec
    if not storage.is_s3(spec) and (spec.startswith((".", "/", "~")) or Path(spec).exists()):
        update["model"] = cfg.model.model_copy(update={"spec": _absolute(spec)})
    return cfg.model_copy(update=update)


def prepare(cfg: TrainConfig) -> tuple[TrainConfig, RunInfo]:
    """Everything checkable before data or a model is loaded: output locations are writable, the run
    name is set (default `<stage>-<config hash>`), and an existing run of that name may be resumed."""
    cfg = with_absolute_paths(cfg)
    if not cfg.ray.enabled and storage.is_s3(cfg.checkpoint.storage_path):
        raise ConfigError(f"checkpoint.storage_path {cfg.checkpoint.storage_path}: ray.enabled: false (--no-ray) "
                          "keeps checkpoints on a local path; use a local storage_path or run with Ray")
    storage.probe_writable(cfg.output_dir)
    storage.probe_writable(cfg.checkpoint.storage_path)
    key = identity.training_key(cfg)
    if cfg.checkpoint.name is None:
        name = identity.default_name(cfg.stage, identity.config_hash(key))
        cfg = cfg.model_copy(update={"checkpoint": cfg.checkpoint.model_copy(update={"name": name})})
    return cfg, identity.prepare_run(cfg, key)


def run_training(cfg: TrainConfig, use_ray: bool | None = None, callbacks: list | None = None) -> dict:
    """Train one stage (through Ray Train, or in this process when `cfg.ray.enabled` is false);
    returns the summary written to `<output_dir>/summary.json`.

    `use_ray` overrides `cfg.ray.enabled` when given (kept for callers written against the old signature).
    `callbacks` go to Ray Train's RunConfig (Tune trials report through them); ignored without Ray."""
    t0 = time.perf_counter()
    if use_ray is not None and use_ray != cfg.ray.enabled:
        cfg = cfg.model_copy(update={"ray": cfg.ray.model_copy(update={"enabled": use_ray})})
    cfg, run = prepare(cfg)
    tables, data_info = build_tables(cfg)
    plan = plan_steps(cfg, tables["train"].num_rows, cfg.workers)
    identity.check_plan(cfg, run, plan)
    identity.write_record(run, cfg.stage, plan)
    log.info("%s data: %s; plan: %s; run %s", cfg.stage, {k: v for k, v in data_info.items() if "files" not in k},
             plan, run.directory)
    if cfg.ray.enabled:
        checkpoint, metrics, _ = fit_with_ray(cfg, tables, plan, run, callbacks)
        with checkpoint.as_directory() as directory:
            exported = copy_model_files(directory, storage.join(cfg.output_dir, "best"))
        best_path = checkpoint.path
    else:
        directory, metrics, _ = fit_locally(cfg, tables, plan, run)
        exported = copy_model_files(directory, storage.join(cfg.output_dir, "best"))
        best_path = str(directory)
    summary = {
        "stage": cfg.stage, "model": cfg.model.spec, "plan": plan, "data": data_info, "run": run.as_dict(),
        "best_checkpoint": best_path, "best_model_dir": storage.join(cfg.output_dir, "best"),
        "best_metrics": metrics, "exported_files": len(exported), "wall_seconds": time.perf_counter() - t0,
        "config": cfg.model_dump(mode="json"),
    }
    write_training_report(cfg, summary)
    return summary
