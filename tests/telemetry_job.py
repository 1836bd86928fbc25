"""A small job through every instrumented stage, as a Ray driver of an existing cluster (the
Prometheus scrape test in test_telemetry.py runs it): the corpus stage on real Reuters/Wikipedia
records with planted duplicates, synthetic instructions from the embedded teacher, a few pre-training
steps, FLARE evaluation on a few rows, and a sweep trial's report callback gauges. Writes what each
stage itself reported (manifest counts, synth verdicts, eval rows/scores, training history) to
`<out>/expected.json`, for the test to compare with what Prometheus scraped.

    RAY_ADDRESS=... FINADAPT_PIPELINE=name python tests/telemetry_job.py OUT [--stages corpus,synth,...]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

STAGES = ("corpus", "synth", "pretrain", "eval", "sweep")
SWEEP_TRIAL = "telemetry_00000"


def corpus_inputs(folder: Path, n: int = 120) -> list[dict]:
    """The first `n` records of two real corpora, plus 4 exact copies and 3 near copies (one word
    changed) of long Reuters stories under new ids, so both dedup steps remove something."""
    from finadapt.paths import data_dir

    inputs = []
    for name, domain in (("reuters21578", "financial"), ("wikipedia_en", "general")):
        with gzip.open(data_dir() / "corpora" / f"{name}.jsonl.gz", "rt") as src:
            records = [json.loads(line) for _, line in zip(range(n), src)]
        if name == "reuters21578":
            long = [r for r in records if len(r["text"].split()) > 120][:7]
            records += [{**r, "id": f"{name}-copy{i}"} for i, r in enumerate(long[:4])]
            records += [{**r, "id": f"{name}-near{i}", "text": r["text"].replace(" the ", " a ", 1)}
                        for i, r in enumerate(long[4:])]
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        inputs.append({"path": str(path), "source": name, "domain": domain})
    return inputs


def run_corpus(out: Path) -> dict:
    from finadapt.data.pipeline import CorpusConfig, run_corpus

    (out / "corpus-in").mkdir(parents=True, exist_ok=True)
    cfg = CorpusConfig(inputs=corpus_inputs(out / "corpus-in"), output_dir=str(out / "corpus"),
                       exact_dedup={"num_partitions": 2}, pack={"tokenizer": "tiny-random", "seq_len": 256},
                       near_dedup={"threshold": 0.8})
    manifest = run_corpus(cfg)
    stages = manifest["documents_per_stage"]
    return {"documents_in": sum(stages["ingested"].values()), "documents_out": sum(stages["mixed"].values()),
            "filter_drops": {k: sum(v.values()) for k, v in manifest["filter_drops"].items()},
            "duplicates_removed": {"exact": manifest["exact_dedup"]["removed"],
                                   "near": manifest["near_dedup"].get("removed", 0)}}


def run_synth(out: Path) -> dict:
    from finadapt.synth.config import SynthConfig
    from finadapt.synth.pipeline import NO_OUTPUT, run_synthesis

    cfg = SynthConfig.model_validate({
        "teacher": {"spec": "embedded:smollm2-135m-instruct"}, "engine": {"kind": "hf", "batch_size": 4},
        "ray": {"workers": 1, "cpus_per_worker": 1}, "tasks": ["fpb", "headlines"], "requests_per_task": 4,
        "few_shot": 2, "sampling": {"max_tokens": 64}, "verify": {"enabled": False},
        "output_dir": str(out / "synth")})
    run = run_synthesis(cfg)
    outputs = Counter(r["task"] for r in run.accepted) + Counter(
        r["task"] for r in run.quarantined if r["reason"] != NO_OUTPUT)  # no row back: no generation
    return {"generations": dict(outputs),
            "accepted": dict(Counter(r["task"] for r in run.accepted)),
            "rejected": [[t, r, n] for (t, r), n in Counter((q["task"], q["reason"]) for q in run.quarantined).items()]}


def run_pretrain(out: Path) -> dict:
    from train_fixtures import pretrain_cfg, write_shards

    from finadapt.train.config import PretrainConfig
    from finadapt.train.run import run_training

    shards = write_shards(out / "shards")
    cfg = PretrainConfig.model_validate(pretrain_cfg(shards, out / "pretrain", max_steps=3, eval_every_steps=3,
                                                     data__seq_len=64))
    summary = run_training(cfg, use_ray=True)
    history = [json.loads(x) for x in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()]
    last = history[-1]
    return {"step": last["step"], "loss": last["loss"], "mfu": last["mfu"], "tokens_per_s": last["tokens_per_s"],
            "total_steps": summary["plan"]["total_steps"]}


def run_eval(out: Path) -> dict:
    from finadapt.config import EvalConfig
    from finadapt.evaluate.api import evaluate

    cfg = EvalConfig.model_validate({
        "model": {"spec": "tiny-random"}, "tasks": ["fpb", "headlines"], "limit": 3, "task_limits": {},
        "modes": ["choice"], "bootstrap": 20, "ray": {"workers": 1, "cpus_per_worker": 1},
        "output_dir": str(out / "eval")})
    run, results = evaluate(cfg)
    return {"rows": dict(Counter(r["task"] for r in run.rows)),
            "scores": [[s["task"], s["mode"], s["primary"], s["score"]] for s in results["scores"]]}


def run_sweep(out: Path) -> dict:
    """The gauges a sweep trial's report callback sets (tune/trial.py SweepReportCallback)."""
    from finadapt.tune.metrics import SweepGauges

    gauges = SweepGauges("telemetry-sweep", SWEEP_TRIAL)
    for step, objective in ((1, 0.25), (2, 0.5)):
        gauges.update({"step": step, "objective": objective})
    return {"trial": SWEEP_TRIAL, "step": 2, "score": 0.5}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--stages", default=",".join(STAGES))
    args = parser.parse_args(argv)
    import ray

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # the job's environment for every worker it starts (as `ray job submit --runtime-env-json` does)
    env = {k: os.environ[k] for k in ("FINADAPT_PIPELINE", "FINADAPT_DATA_DIR", "FINADAPT_CACHE_DIR") if k in os.environ}
    ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), runtime_env={"env_vars": env}, log_to_driver=False)
    runners = {"corpus": run_corpus, "synth": run_synth, "pretrain": run_pretrain, "eval": run_eval,
               "sweep": run_sweep}
    expected = {}
    for name in args.stages.split(","):
        start = time.monotonic()
        expected[name] = runners[name](out)
        expected[name]["seconds"] = round(time.monotonic() - start, 1)
        (out / "expected.json").write_text(json.dumps(expected, indent=2, default=float))
        print(f"telemetry job: {name} done", flush=True)
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
