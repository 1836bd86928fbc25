"""Training configs for both stages (`pipelines/configs/pretrain.yaml`, `sft.yaml`).

Defaults are the paper's: AdamW lr 1e-4, weight decay 0.1, batch 32 x gradient accumulation 4
(= 128 sequences per optimizer step), 2 epochs for stage 1 and 1 for stage 2, best checkpoint kept.
The per-worker micro-batch only decides memory: the effective batch per optimizer step holds.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, PositiveInt, model_validator

from finadapt.config import ConfigError, ModelConfig, StageConfig, StrictModel, TaskNames, TrainRaySection


# The score that picks each stage's best checkpoint (and that a sweep optimises).
SCORE = {"pretrain": ("val_loss", "min"), "sft": ("val_score", "max")}


class OptimConfig(StrictModel):
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.1, ge=0, description="not applied to biases and norm weights")
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    max_grad_norm: float | None = Field(1.0, gt=0, description="clip the global grad norm (None: off)")
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="share of optimizer steps with linear warm-up")
    fused: bool | None = Field(None, description="fused AdamW kernel; None = on where torch supports it")


class BatchConfig(StrictModel):
    """Effective batch = batch_size x grad_accum sequences (stage 1) or samples (stage 2) per step."""

    batch_size: int = Field(32, ge=1, description="the paper's per-step batch before accumulation")
    grad_accum: int = Field(4, ge=1, description="the paper's gradient accumulation steps")
    micro_batch_size: int = Field(8, ge=1, description="stage 1: sequences per forward on each worker")
    micro_batch_tokens: int = Field(4096, ge=16, description="stage 2: packed tokens per forward on each worker")

    @property
    def effective(self) -> int:
        return self.batch_size * self.grad_accum

    def per_worker(self, num_workers: int) -> int:
        """Sequences/samples each worker contributes per optimizer step; errors if the split is uneven."""
        if self.effective % num_workers:
            raise ConfigError(
                f"batch: effective batch {self.batch_size} x {self.grad_accum} = {self.effective} cannot be "
                f"split evenly over {num_workers} workers; change batch.batch_size, batch.grad_accum or "
                f"ray.workers")
        return self.effective // num_workers

    def micro_steps(self, num_workers: int) -> int:
        """Stage 1: forwards per optimizer step on each worker (per-worker share / micro-batch)."""
        share = self.per_worker(num_workers)
        if share % self.micro_batch_size:
            raise ConfigError(
                f"batch: {num_workers} workers x micro_batch_size {self.micro_batch_size} x accumulation "
                f"cannot make the effective batch {self.effective} ({share} per worker is not a multiple of "
                f"{self.micro_batch_size}); pick a micro_batch_size dividing {share}")
        return share // self.micro_batch_size


class CheckpointSection(StrictModel):
    storage_path: str = Field("runs/train", description="Ray Train storage: local dir or s3://bucket/prefix")
    name: str | None = Field(None, description="run name; running again with the same name resumes it. "
                             "None: <stage>-<hash of the training config>, so different configs never share a run")
    resume: Literal["auto", "fresh", "force"] = Field(
        "auto", description="a run of this name exists: auto = resume only if its training config matches "
        "(else fail naming the differing keys); fresh = discard its checkpoints and start at step 0; "
        "force = resume it although the config differs")
    every_steps: int | None = Field(None, ge=1, description="also checkpoint every N steps (None: at evaluation)")
    num_to_keep: int = Field(2, ge=1, description="best checkpoints kept by the stage's score")
    save_optimizer: bool = Field(True, description="optimizer/scheduler state, needed to resume")


class FailureSection(StrictModel):
    max_failures: int = Field(2, ge=-1, description="worker-group restarts from the last checkpoint (-1: no limit)")


class TrainConfig(StageConfig):
    """Shared by both stages; the stage-specific data section is in the subclasses."""

    renamed_keys: ClassVar[dict[str, str]] = {
        "scaling.num_workers": "ray.workers (ray.enabled: false runs the loop in this process)",
        "scaling.use_gpu": "ray.gpus_per_worker (> 0 trains on GPUs)",
        "scaling.cpus_per_worker": "ray.cpus_per_worker",
        "scaling.threads_per_worker": "threads_per_worker (top level)",
        "ray_address": "ray.address", "num_cpus": "ray.num_cpus"}

    stage: Literal["pretrain", "sft"]
    model: ModelConfig = ModelConfig(dtype="auto")
    optim: OptimConfig = OptimConfig()
    batch: BatchConfig = BatchConfig()
    epochs: float = Field(1, gt=0, description="passes over the training data (fractions allowed)")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (None: epochs)")
    eval_every_steps: int | None = Field(None, ge=1, description="validate every N steps (None: each epoch end)")
    log_every_steps: int = Field(1, ge=1)
    seed: int = 0
    gradient_checkpointing: bool = False
    lora: dict[str, Any] | None = Field(None, description="peft LoraConfig kwargs; None = full fine-tuning")
    compile: bool = Field(False, description="torch.compile the model (GPU mainly)")
    peak_flops: float | None = Field(None, gt=0, description="device peak FLOP/s for MFU; None = measured (CPU)")
    ray: TrainRaySection = Field(TrainRaySection(), description="Ray Train workers (ray.workers, "
                                 "cpus/gpus_per_worker: gpus > 0 trains on GPUs, placement_strategy); enabled: "
                                 "false runs the loop in this process")
    threads_per_worker: int | None = Field(None, ge=1, description="torch intra-op threads (None: "
                                           "ray.cpus_per_worker)")
    checkpoint: CheckpointSection = CheckpointSection()
    failure: FailureSection = FailureSection()
    output_dir: str = Field("runs/train/out", description="best model (HF dir), metrics, curves (local or s3://)")

    @property
    def workers(self) -> int:
        """Processes sharing each optimizer step: ray.workers with Ray, one without."""
        return self.ray.workers if self.ray.enabled else 1

    @property
    def use_gpu(self) -> bool:
        return self.ray.gpus_per_worker > 0

    @model_validator(mode="after")
    def _check_batch(self) -> "TrainConfig":
        workers = self.workers
        self.batch.per_worker(workers)
        if self.stage == "pretrain":
            self.batch.micro_steps(workers)
        return self


class PretrainData(StrictModel):
    shards: str = Field("runs/corpus", description="corpus output dir (shards/*.parquet) or a parquet path")
    val_shards: int = Field(1, ge=1, description="last N shard files held out for validation perplexity")
    val_sequences: int | None = Field(64, ge=1, description="cap on validation sequences (None: all)")
    seq_len: int | None = Field(None, ge=16, description="cut packed rows into windows of this length "
                                "(must divide the shard length; None: as packed)")
    limit_sequences: int | None = Field(None, ge=1, description="use only the first N training sequences")


class PretrainConfig(TrainConfig):
    stage: Literal["pretrain"] = "pretrain"
    epochs: float = 2
    data: PretrainData = PretrainData()


class SftData(StrictModel):
    tasks: TaskNames = Field(["fpb", "fiqasa", "headlines", "ner"], description="training splits used")
    extra_jsonl: list[str] = Field([], description="more FLARE-format JSONL added as is, local or s3://")
    synthetic_jsonl: list[str] = Field([], description="synthetic FLARE JSONL (finadapt synth) mixed in at "
                                       "synthetic_ratio")
    synthetic_ratio: float | dict[str, float] = Field(
        0.0, description="synthetic samples per real training sample, per task if a map (the sweep knob)")
    synthetic_on_short: Literal["error", "cap"] = Field("error", description="too few synthetic samples: "
                                                        "fail, or use them all")
    template: Literal["chat", "flare"] = Field("chat", description="chat = the model's chat template; "
                                               "flare = the raw FLARE query followed by the answer")
    max_length: int = Field(1024, ge=16, description="prompt+response tokens kept; longer samples are counted")
    limit_per_task: int | None = Field(None, ge=1, description="seeded sample of N training rows per task")
    shuffle_seed: int = 0


class SftValidation(StrictModel):
    tasks: TaskNames = Field(["fpb", "fiqasa", "headlines", "ner"])
    limit: int = Field(100, ge=1, description="validation rows per task (Headlines: headlines x 9), seeded")
    task_limits: dict[str, PositiveInt] = Field({"headlines": 20, "ner": 30})
    wrapper: Literal["raw", "chat", "finma"] | None = Field(None, description="None: matches data.template")


class SftConfig(TrainConfig):
    stage: Literal["sft"] = "sft"
    epochs: float = 1
    data: SftData = SftData()
    validation: SftValidation = SftValidation()

