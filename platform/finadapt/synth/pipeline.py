"""The synthetic-instruction stage end to end: requests -> teacher (Ray) -> parse -> validate ->
(verify) -> synthetic.jsonl + quarantine.jsonl + report.

Generation is the expensive, parallel part and runs on Ray (actor pool, vLLM engines or HTTP
workers); parsing and the corpus-level checks (dedup needs every sample) run in the driver.
"""
from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

from finadapt import storage, telemetry
from finadapt.ray_connect import connect
from finadapt.synth.config import SynthConfig
from finadapt.synth.parse import LengthBounds, ParseReject, parse_generation
from finadapt.synth.prompts import Request, TaskExamples, build_requests, render_prompts
from finadapt.synth.redact import redact, redact_text
from finadapt.synth.validate import VERIFIER_DISAGREES, Reference, check_samples
from finadapt.tasks import TASK_NAMES, Sample, get_task, load_samples

log = logging.getLogger(__name__)
NO_OUTPUT = "no_output"


@dataclass
class SynthRun:
    """Everything the report needs: accepted samples, quarantined generations, timings."""

    accepted: list[dict] = field(default_factory=list)     # Sample row + provenance
    quarantined: list[dict] = field(default_factory=list)  # request, reason, detail, raw output
    requests: dict[str, int] = field(default_factory=dict)
    real: dict[str, list[Sample]] = field(default_factory=dict)
    generation_seconds: float = 0.0
    total_seconds: float = 0.0
    generated_tokens: int = 0
    verified: bool = False


def prepare_requests(cfg: SynthConfig, real: dict[str, list[Sample]]) -> list[Request]:
    """Seeded requests with prompts rendered by the teacher's chat template (unless a chat API does it)."""
    examples = {t: TaskExamples.of(t, real[t]) for t in cfg.tasks}
    requests = build_requests(examples, cfg.counts(), cfg.seed, cfg.few_shot, cfg.label_balance)
    for r in requests:
        r.max_tokens = cfg.sampling.max_tokens_for(r.task)
    chat_api = cfg.engine.kind == "openai" and cfg.engine.api == "chat"
    use_prefix = cfg.use_prefix and not chat_api
    if not use_prefix:
        for r in requests:
            r.prefix = ""
    if not chat_api:
        from finadapt.models import ModelLoadError, load_tokenizer

        try:
            tokenizer = load_tokenizer(cfg.teacher.spec, cfg.teacher.trust_remote_code)
        except OSError as err:
            raise ModelLoadError(f"cannot load the tokenizer of teacher {cfg.teacher.spec!r} to render the prompts "
                                 f"({err}); an openai engine with api: chat needs none") from err
        render_prompts(requests, tokenizer, use_prefix)
    return requests


def generate_outputs(cfg: SynthConfig, requests: list[Request]) -> list[dict]:
    """Run the configured engine over the requests on Ray; one output row per request."""
    import ray.data

    from finadapt.synth.engines import generate

    connect(cfg.ray)
    ds = ray.data.from_items([r.to_row() for r in requests])
    progress = GenerationProgress({r.request_id: r.task for r in requests})
    outputs = []
    for row in generate(ds, cfg).iter_rows():  # streamed: the counts move while the teacher works
        outputs.append(dict(row))
        progress.add(outputs[-1])
    progress.flush()
    return outputs


class GenerationProgress:
    """Generations and generated tokens per task as Ray counters, sent every `every` rows (any engine:
    counted where the outputs arrive, so vLLM and HTTP engines count alike)."""

    def __init__(self, task_of: dict[str, str], every: int = 16):
        self.task_of, self.every = task_of, every
        self.pending: dict[str, list[int]] = {}
        self.rows = 0

    def add(self, output: dict) -> None:
        task = self.task_of.get(output.get("request_id"), "unknown")
        counts = self.pending.setdefault(task, [0, 0])
        counts[0] += 1
        counts[1] += int(output.get("generated_tokens") or 0)
        self.rows += 1
        if self.rows % self.every == 0:
            self.flush()

    def flush(self) -> None:
        for task, (generations, tokens) in self.pending.items():
            telemetry.record("finadapt_synth_generations", generations, task=task)
            telemetry.record("finadapt_synth_generated_tokens", tokens, task=task)
        self.pending = {}


def provenance(cfg: SynthConfig, request: Request, output: dict, teacher_revision: str) -> dict:
    """Where a sample came from; engine settings redacted (keys in base_url, engine_kwargs, env_vars)."""
    return dict(
        source="synthetic", teacher=redact_text(cfg.teacher.spec), teacher_revision=teacher_revision,
        engine=cfg.engine.kind, engine_config=redact(cfg.engine.model_dump(mode="json")),
        sampling=cfg.sampling.model_dump(mode="json"), prompt_hash=request.prompt_hash,
        request_id=request.request_id, request_seed=request.seed, run_seed=cfg.seed,
        seed_example_ids=list(request.seed_ids), target=request.target, group=request.group,
        generated_tokens=int(output.get("generated_tokens", 0)), max_tokens=request.max_tokens,
        repaired_quotes=bool(output.get("repaired", False)),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def _quarantine(request: Request, reason: str, detail: str, output: dict | None) -> dict:
    return dict(request_id=request.request_id, task=request.task, target=request.target, group=request.group,
                reason=reason, detail=detail, output=(output or {}).get("output", ""),
                truncated=bool((output or {}).get("truncated", False)), prompt_hash=request.prompt_hash,
                seed_example_ids=list(request.seed_ids))


def parse_all(cfg: SynthConfig, requests: list[Request], outputs: list[dict]) -> tuple[list[tuple], list[dict]]:
    """(request, output, sample) for every parsable generation, quarantine rows for the rest."""
    by_id = {o["request_id"]: o for o in outputs}
    unknown = set(by_id) - {r.request_id for r in requests}
    if unknown:  # an engine that loses our ids would otherwise quarantine everything as no_output
        raise RuntimeError(f"the engine returned {len(unknown)} rows for unknown request ids, e.g. {sorted(unknown)[:3]}")
    bounds = LengthBounds(cfg.validation.min_words, cfg.validation.max_words)
    parsed, rejected = [], []
    for r in requests:
        out = by_id.get(r.request_id)
        if out is None:
            rejected.append(_quarantine(r, NO_OUTPUT, "the engine returned no row for this request", None))
            continue
        try:
            parsed_output = parse_generation(
                dict(task=r.task, target=r.target, group=r.group, request_id=r.request_id),
                out["output"], bool(out.get("truncated")), bounds)
        except ParseReject as err:
            rejected.append(_quarantine(r, err.reason, str(err), out))
            continue
        parsed.append((r, {**out, "repaired": parsed_output.repaired}, parsed_output.sample))
    return parsed, rejected


def reference_texts(cfg: SynthConfig, real: dict[str, list[Sample]]) -> Reference:
    from finadapt.data.decontaminate import DecontamConfig, build_eval_index, eval_texts

    decontam = DecontamConfig(ngram=cfg.validation.eval_ngram, tasks=list(TASK_NAMES),
                              splits=list(cfg.validation.eval_splits))
    texts = eval_texts(decontam.tasks, decontam.splits)
    return Reference.build(real, texts, build_eval_index(decontam, texts))


def verify_labels(cfg: SynthConfig, samples: list[Sample]) -> dict[str, int]:
    """Predicted label index per classification sample id, by the verifier through the eval harness."""
    from finadapt.config import EvalConfig, EvalRaySection
    from finadapt.evaluate.runner import predict_with_ray

    rows = [{**s.to_row(), "kind": get_task(s.task).kind} for s in samples if s.task != "ner"]
    if not rows:
        return {}
    model = cfg.verify.model or cfg.teacher
    eval_cfg = EvalConfig(model=model, modes=["choice"], batch_rows=cfg.verify.batch_size,
                          ray=EvalRaySection(address=cfg.ray.address, num_cpus=cfg.ray.num_cpus))
    connect(cfg.ray)
    return {o["id"]: int(o["choice_pred"]) for o in predict_with_ray(eval_cfg, rows)}


def run_synthesis(cfg: SynthConfig) -> SynthRun:
    from finadapt.models import model_provenance

    storage.probe_writable(cfg.output_dir)  # an unwritable output fails now, not after the teacher ran
    start = time.perf_counter()
    run = SynthRun()
    run.real = {t: load_samples(t, "train") for t in cfg.tasks}
    requests = prepare_requests(cfg, run.real)
    run.requests = {t: sum(r.task == t for r in requests) for t in cfg.tasks}
    log.info("synthesizing with %s (%s engine): %s requests", cfg.teacher.spec, cfg.engine.kind, run.requests)
    t0 = time.perf_counter()
    outputs = generate_outputs(cfg, requests)
    run.generation_seconds = time.perf_counter() - t0
    run.generated_tokens = sum(int(o.get("generated_tokens", 0)) for o in outputs)
    parsed, run.quarantined = parse_all(cfg, requests, outputs)
    v = cfg.validation
    verdicts = check_samples([p[2] for p in parsed], reference_texts(cfg, run.real), v.near_copy_ratio,
                             v.duplicate_ratio, v.eval_ratio)
    teacher_revision = (model_provenance(cfg.teacher.spec)[1] if cfg.engine.kind != "openai"
                        or cfg.engine.api == "completions" else f"openai:{cfg.engine.model}")
    candidates = []
    for (request, output, sample), verdict in zip(parsed, verdicts):
        if verdict.reason:
            run.quarantined.append(_quarantine(request, verdict.reason, verdict.detail, output))
            continue
        prov = provenance(cfg, request, output, teacher_revision)
        prov.update(nearest_real_id=verdict.nearest_real_id,
                    nearest_real_similarity=round(verdict.nearest_real_similarity, 1))
        candidates.append((request, output, sample, prov))
    if cfg.verify.enabled:
        run.verified = True
        predictions = verify_labels(cfg, [c[2] for c in candidates])
        kept = []
        for request, output, sample, prov in candidates:
            pred = predictions.get(sample.id)
            prov["verifier_agrees"] = None if pred is None else pred == sample.gold
            if pred is not None and pred != sample.gold:
                prov["verifier_label"] = sample.choices[pred]
                if cfg.verify.mode == "filter":
                    run.quarantined.append(_quarantine(
                        request, VERIFIER_DISAGREES, f"verifier picked {sample.choices[pred]!r}, "
                        f"intended {sample.answer!r}", output))
                    continue
            kept.append((request, output, sample, prov))
        candidates = kept
    run.accepted = [{**c[2].to_row(), "provenance": c[3]} for c in candidates]
    run.total_seconds = time.perf_counter() - start
    publish_metrics(run)
    return run


def publish_metrics(run: SynthRun) -> None:
    """Accepted samples per task and quarantined generations per task and reason, as Ray counters."""
    for task, n in Counter(r["task"] for r in run.accepted).items():
        telemetry.record("finadapt_synth_accepted", n, task=task)
    for (task, reason), n in Counter((r["task"], r["reason"]) for r in run.quarantined).items():
        telemetry.record("finadapt_synth_rejected", n, task=task, reason=reason)


def write_jsonl(uri: str, rows: list[dict]) -> None:
    storage.write_text(uri, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
