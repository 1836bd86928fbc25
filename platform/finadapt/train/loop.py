"""The training loop of both stages, written against a `Session` (Ray Train or local).

Each optimizer step pulls exactly one batch of `effective / world_size` rows per worker, so a step is
the paper's effective batch, and the step position inside an epoch is all it takes to resume:
after a restart the loop skips the batches it already trained on (step counter, epoch and data
position continue from the checkpoint), and every worker makes the same number of steps and
reports, which DDP and Ray Train both require.
"""
from __future__ import annotations

import json
import logging
import math
import os
import resource
import tempfile
import time
import zlib

import numpy as np
import torch

from finadapt import telemetry
from finadapt.models import LoadedModel, load_model, resolve_dtype
from finadapt.train import flops
from finadapt.train.batching import length_grouped_micro_batches, packed_micro_batches
from finadapt.train.checkpoint import load_train_state, save_checkpoint, unwrap
from finadapt.train.config import SCORE, PretrainConfig, SftConfig, TrainConfig
from finadapt.train.step import SelectedTokenLoss, StepRunner, build_optimizer, build_scheduler, evaluate_loss

log = logging.getLogger("finadapt.train")



def config_from_dict(data: dict) -> TrainConfig:
    return (PretrainConfig if data["stage"] == "pretrain" else SftConfig).model_validate(data)


# --------------------------------------------------------------------------- set-up
def _device(cfg: TrainConfig, session) -> str:
    if cfg.use_gpu and torch.cuda.is_available():
        return f"cuda:{session.local_rank}"
    return "cpu"


def _param_and_autocast_dtypes(cfg: TrainConfig, device: str) -> tuple[torch.dtype, torch.dtype | None]:
    """fp32 master weights + bf16 autocast on GPU for dtype=auto; fp32 on CPU; explicit dtypes are pure."""
    if cfg.model.dtype == "auto":
        return torch.float32, (torch.bfloat16 if device.startswith("cuda") else None)
    return resolve_dtype(cfg.model.dtype, device), None


def _load(cfg: TrainConfig, device: str, restore_dir: str | None) -> LoadedModel:
    dtype, _ = _param_and_autocast_dtypes(cfg, device)
    # LoRA resumes from the base model + saved adapters; full fine-tuning from the checkpoint weights.
    spec = restore_dir if restore_dir and not cfg.lora else cfg.model.spec
    loaded = load_model(spec, dtype=dtype, device=device, trust_remote_code=cfg.model.trust_remote_code)
    model = loaded.model
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if cfg.lora:
        from peft import LoraConfig, PeftModel, get_peft_model

        adapter = os.path.join(restore_dir, "adapter") if restore_dir else None
        if adapter and os.path.isdir(adapter):
            model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
        else:
            model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **cfg.lora))
    model.train()
    loaded.model = model
    return loaded


def publish_step(cfg: TrainConfig, metrics: dict) -> None:
    """Loss, tokens/s, MFU and step as Ray metrics (stage pretrain/sft; trial inside a sweep)."""
    trial = telemetry.trial_from_run_name(cfg.checkpoint.name or "")
    tags = {"stage": cfg.stage, **({"trial": trial} if trial else {})}
    telemetry.record("finadapt_train_loss", metrics["loss"], **tags)
    telemetry.record("finadapt_train_tokens_per_second", metrics["tokens_per_s"], **tags)
    telemetry.record("finadapt_train_mfu", metrics["mfu"], **tags)
    telemetry.record("finadapt_train_step", metrics["step"], **tags)


# --------------------------------------------------------------------------- data -> micro-batches
def _stack(column) -> np.ndarray:
    array = np.asarray(column)
    if array.dtype == object:
        array = np.stack([np.asarray(x) for x in column])
    return array


def micro_batches_for(cfg: TrainConfig, batch: dict, pad_id: int):
    if cfg.stage == "pretrain":
        return packed_micro_batches(_stack(batch["input_ids"]), np.asarray(batch["n_tokens"]),
                                    cfg.batch.micro_batch_size)
    ids = [np.asarray(x) for x in batch["input_ids"]]
    return length_grouped_micro_batches(ids, [int(x) for x in batch["prompt_length"]],
                                        cfg.batch.micro_batch_tokens, pad_id)


def _fingerprint(batch: dict) -> int:
    """A short hash of the first row of a step: lets tests check the data position after a resume."""
    first = np.asarray(batch["input_ids"][0])
    return zlib.crc32(first.astype(np.int64).tobytes())


# --------------------------------------------------------------------------- the loop
class Trainer:
    def __init__(self, cfg: TrainConfig, session, plan: dict, run: dict | None = None):
        self.cfg, self.session, self.plan = cfg, session, plan
        self.run = run or {}  # identity.RunInfo.as_worker_dict(): stamped on every checkpoint
        threads = cfg.threads_per_worker or max(1, int(cfg.ray.cpus_per_worker))
        torch.set_num_threads(threads)
        torch.manual_seed(cfg.seed + session.rank)
        self.device = _device(cfg, session)
        _, self.autocast = _param_and_autocast_dtypes(cfg, self.device)
        with session.latest_checkpoint() as restore_dir:
            self.loaded = _load(cfg, self.device, restore_dir)
            self.model = self.loaded.model
            self.tokenizer = self.loaded.tokenizer
            self.loss_module = self._wrap(SelectedTokenLoss(self.model))
            self.optimizer = build_optimizer(self.model, cfg.optim)
            self.scheduler = build_scheduler(self.optimizer, cfg.optim, plan["total_steps"])
            self.state = {"step": 0, "epoch": 0, "step_in_epoch": 0, "history": [], "restarts": 0}
            if restore_dir:
                self.state = load_train_state(restore_dir, self.optimizer, self.scheduler)
                self.state["restarts"] = self.state.get("restarts", 0) + 1
                log.info("resumed from checkpoint at step %d (epoch %d, batch %d of the epoch)",
                         self.state["step"], self.state["epoch"], self.state["step_in_epoch"])
        self.runner = StepRunner(self.loss_module, self.optimizer, self.scheduler, cfg.optim.max_grad_norm,
                                 session.world_size, session.all_reduce, self.device, self.autocast)
        self.params = flops.param_counts(self.model)
        self.peak = flops.PeakFlops(cfg.peak_flops, device=self.device)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self._val_batches = None

    def _wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        if self.session.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device] if self.device.startswith("cuda") else None
            module = DistributedDataParallel(module, device_ids=ids)
        if self.cfg.compile:
            module = torch.compile(module)
        return module

    # ----------------------------------------------------------------- validation
    def validate(self) -> dict:
        if self.cfg.stage == "pretrain":
            if self._val_batches is None:
                rows = list(self.session.batches("val", 1 << 30)) if self.session.has_dataset("val") else []
                self._val_batches = [mb for b in rows for mb in micro_batches_for(self.cfg, b, self.pad_id)]
            return evaluate_loss(self.loss_module, self._val_batches, self.device, self.session.all_reduce)
        from finadapt.train.validate import flare_validation

        result = flare_validation(unwrap(self.model), self.tokenizer, self.cfg) if self.session.rank == 0 else None
        return self.session.broadcast_object(result)

    # ----------------------------------------------------------------- reporting
    def _step_metrics(self, stats, elapsed: float) -> dict:
        world = self.session.world_size
        tokens_per_s = stats.real_tokens / elapsed
        useful = self.params.useful_train_flops(stats.real_tokens, stats.target_tokens)
        executed = self.params.executed_train_flops(stats.padded_tokens, stats.target_tokens)
        mfu, capped = self.peak.utilisation(useful, elapsed * world)
        mfu_executed, capped_executed = self.peak.utilisation(executed, elapsed * world)
        if capped or capped_executed:
            log.warning("step %d: utilisation above 1 against the peak %.3g FLOP/s (measured on busy cores?): "
                        "reported as 1.0 (mfu_capped)", self.state["step"], self.peak.value)
        return {"step": self.state["step"], "epoch": self.state["epoch"], "loss": stats.loss, "lr": stats.lr,
                "grad_norm": stats.grad_norm, "tokens": stats.real_tokens, "target_tokens": stats.target_tokens,
                "padded_tokens": stats.padded_tokens, "padding_share": 1 - stats.real_tokens / max(stats.padded_tokens, 1),
                "tokens_per_s": tokens_per_s, "mfu": mfu, "mfu_executed": mfu_executed,
                "mfu_capped": capped or capped_executed, "peak_flops": self.peak.value,
                "step_seconds": elapsed, "restarts": self.state["restarts"], "pid": os.getpid(),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}

    def _save(self, metrics: dict) -> str | None:
        if self.session.rank != 0:
            return None
        directory = tempfile.mkdtemp(prefix="finadapt_ckpt_")
        state = dict(self.state)
        save_checkpoint(directory, self.model, self.tokenizer,
                        self.optimizer if self.cfg.checkpoint.save_optimizer else None, self.scheduler,
                        state=state, meta={"stage": self.cfg.stage, "metrics": metrics,
                                           "base_model": self.cfg.model.spec,
                                           "config_hash": self.run.get("config_hash"),
                                           "training_config": self.run.get("training_config")})
        return directory

    def _write_history(self) -> None:
        if self.session.rank != 0:
            return
        from finadapt import storage

        lines = "".join(json.dumps(h) + "\n" for h in self.state["history"])
        storage.write_text(storage.join(self.cfg.output_dir, "metrics.jsonl"), lines)

    def _report(self, metrics: dict, with_checkpoint: bool) -> None:
        checkpoint_dir = self._save(metrics) if with_checkpoint else None
        try:
            self.session.report(metrics, checkpoint_dir)
        finally:
            if checkpoint_dir:
                import shutil

                shutil.rmtree(checkpoint_dir, ignore_errors=True)

    # ----------------------------------------------------------------- main loop
    def fit(self) -> dict:
        cfg, plan, state = self.cfg, self.plan, self.state
        per_worker = plan["rows_per_worker_step"]
        steps_per_epoch, total = plan["steps_per_epoch"], plan["total_steps"]
        every = cfg.eval_every_steps
        if state["step"] == 0 and not state["history"]:
            log.info("training %s: %d steps (%d per epoch), effective batch %d (%d per worker x %d workers), "
                     "peak %.1f GFLOP/s per worker", cfg.stage, total, steps_per_epoch, cfg.batch.effective,
                     per_worker, self.session.world_size, self.peak.value / 1e9)
        while state["step"] < total:
            skip = state["step_in_epoch"]
            progressed = False
            for index, batch in enumerate(self.session.batches("train", per_worker)):
                if index >= steps_per_epoch or state["step"] >= total:
                    break
                if index < skip:
                    continue
                progressed = True
                start = time.perf_counter()
                stats = self.runner.run(micro_batches_for(cfg, batch, self.pad_id))
                elapsed = time.perf_counter() - start
                state["step"] += 1
                state["step_in_epoch"] = index + 1
                metrics = self._step_metrics(stats, elapsed)
                metrics["batch_fingerprint"] = _fingerprint(batch)
                end_of_epoch = state["step_in_epoch"] >= steps_per_epoch
                evaluate = (every and state["step"] % every == 0) or end_of_epoch or state["step"] >= total
                checkpoint = evaluate or bool(cfg.checkpoint.every_steps
                                              and state["step"] % cfg.checkpoint.every_steps == 0)
                if end_of_epoch:
                    state["epoch"] += 1
                    state["step_in_epoch"] = 0
                if evaluate:
                    metrics.update(self.validate())
                if self.session.rank == 0:
                    state["history"].append(metrics)
                    self._log(metrics)
                    publish_step(cfg, metrics)
                if checkpoint:
                    if not evaluate:  # keep the score key present for the checkpoint ranking
                        metrics.update(self._last_score())
                    if self.session.world_size > 1:
                        metrics["replica_weight_diff"] = self._replica_weight_diff()
                    self._write_history()
                    self._report(metrics, with_checkpoint=True)
                elif state["step"] % cfg.log_every_steps == 0:
                    self._report(metrics, with_checkpoint=False)
                self._maybe_sleep()
            if not progressed:
                raise RuntimeError(f"worker {self.session.rank}: the training data yielded no batch after "
                                   f"position {skip} of epoch {state['epoch']}")
            if state["step_in_epoch"]:  # the iterator ran dry before steps_per_epoch (uneven shards)
                state["epoch"] += 1
                state["step_in_epoch"] = 0
        self._write_history()
        return state

    def _replica_weight_diff(self) -> float:
        """Largest difference between a worker's and rank 0's per-tensor weight sums (0 when DDP keeps
        the replicas in sync); every worker must call it, as it all-reduces."""
        params = [p.detach() for p in unwrap(self.model).parameters()]
        local = torch.stack([torch.stack([p.double().sum(), p.double().square().sum()]) for p in params]).flatten()
        table = torch.zeros(self.session.world_size, local.numel(), dtype=torch.float64)
        table[self.session.rank] = local.cpu()
        self.session.all_reduce(table)
        diff = float((table - table[0]).abs().max())
        if diff > 1e-6 * float(table[0].abs().max()):
            log.warning("worker weights differ from rank 0's by up to %.3g after step %d (replicas out of sync)",
                        diff, self.state["step"])
        return diff

    def _last_score(self) -> dict:
        key, mode = SCORE[self.cfg.stage]
        for entry in reversed(self.state["history"]):
            if key in entry:
                return {key: entry[key]}
        return {key: math.inf if mode == "min" else -math.inf}

    def _maybe_sleep(self) -> None:
        delay = float(os.environ.get("FINADAPT_TEST_STEP_SLEEP", "0"))
        if delay:  # tests only: gives a watcher time to kill a worker mid-run
            time.sleep(delay)

    def _log(self, m: dict) -> None:
        extra = "".join(f" {k}={m[k]:.4f}" for k in sorted(m) if k.startswith("val_") and isinstance(m[k], float))
        log.info("step %d/%d epoch %d loss %.4f lr %.2e %.1f tok/s mfu %.3f%s", m["step"], self.plan["total_steps"],
                 m["epoch"], m["loss"], m["lr"], m["tokens_per_s"], m["mfu"], extra)


def _quiet_ray_report_log() -> None:
    """Ray Train logs every `report` (all metrics) at INFO under a logger named by its file path."""
    try:
        from ray.train.v2._internal.execution import context

        logging.getLogger(context.__file__).setLevel(logging.WARNING)
    except ImportError:
        pass


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point: `config = {"cfg": TrainConfig as dict, "plan": {...}}`."""
    from finadapt.train.session import RaySession

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _quiet_ray_report_log()
    from finadapt.tasks import split_guard

    split_guard.forbid(config.get("forbidden_splits") or [])  # before any data is read in this worker
    cfg = config_from_dict(config["cfg"])
    run = config.get("run") or {}
    Trainer(cfg, RaySession(resume_from=run.get("resume_from")), config["plan"], run=run).fit()
