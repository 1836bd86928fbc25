"""Training speed on the same SFT samples with the embedded model, measured in one run.

Each part runs in its own subprocess (clean peak memory). The seeded instruction samples (real FPB /
FiQA-SA / Headlines / NER training rows, chat template, loss on responses only) are split into one
warm-up step and `timed_steps` timed steps; every in-process part times exactly the same timed samples:

  peak        fp32 square-matmul microbenchmark with the training's threads, median of N runs (best of
              3 each); measured before AND after the training parts, the higher median is used
  platform    the platform's step (`finadapt.train.step`): length-grouped micro-batches (built inside the
              timed region), logits only at labelled positions, fused AdamW, token-weighted accumulation;
              one warm-up step on other samples, then the timed samples; in-process, no Ray
  hf_dynamic  baseline: Hugging Face `Trainer`, dynamic padding (DataCollatorForSeq2Seq, random order)
  hf_grouped  baseline: the same with `train_sampling_strategy="group_by_length"` (HF's answer to padding;
              `group_by_length=True` in transformers < 5)
              Both HF parts train two epochs over the timed samples (the first warms up) and time the second.
  ray1/ray2   the full Ray Train stage (`run_training`, its own sampling of the data) with 1 worker x 2
              threads and 2 workers x 1 thread
  hf_rebalance (opt-in) `train_sampling_strategy="batch_rebalance"`

Headline: useful-FLOPs utilisation (finadapt/train/flops.py: body on real tokens + vocabulary head at the
target positions, 6 FLOPs per parameter per token) over the measured peak; the executed-FLOPs
utilisation (padding, and the head wherever it ran) sits beside it. A utilisation above 1 means the
peak was measured while the cores were busy: the peak is re-measured, and if that does not help the
utilisations are withheld (null) and flagged. Speed-up is against the best (fastest) HF baseline.

Writes benchmarks/results/train_speed.json. Run: `make bench-train` (about 10 minutes on 2 idle cores).
`--quick` is a smoke run (tiny sizes, written under the system temp dir unless --out is given).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from finadapt.train.flops import BatchTokens, ParamCounts, batch_tokens, implausible, param_counts, utilisation

OUT = Path(__file__).parent / "results" / "train_speed.json"
QUICK_OUT = Path(tempfile.gettempdir()) / "finadapt-bench" / "train_speed.quick.json"
SEED = 0
SETTINGS_ENV = "TRAIN_BENCH_SETTINGS"
DEFAULT_PARTS = ("platform", "hf_dynamic", "hf_grouped", "ray1", "ray2")
HF_STRATEGIES = {"hf_dynamic": "random", "hf_grouped": "group_by_length", "hf_rebalance": "batch_rebalance"}
MAX_PEAK_REMEASURES = 2
TARGETS = {"useful_mfu": 0.75, "vs_best_hf": 1.5}


@dataclass(frozen=True)
class Settings:
    model: str = os.environ.get("TRAIN_BENCH_MODEL", "embedded:smollm2-135m-instruct")
    samples_per_step: int = int(os.environ.get("TRAIN_BENCH_STEP_SAMPLES", "32"))
    timed_steps: int = int(os.environ.get("TRAIN_BENCH_STEPS", "3"))
    threads: int = int(os.environ.get("TRAIN_BENCH_THREADS", str(os.cpu_count() or 2)))
    hf_micro_batch: int = 8
    micro_batch_tokens: int = 4096
    peak_size: int = 4096
    peak_runs: int = 5
    peak_repeats: int = 3

    def check(self) -> Settings:
        if self.samples_per_step % self.hf_micro_batch:
            raise ValueError(f"samples_per_step {self.samples_per_step} is not a multiple of the HF micro-batch "
                             f"{self.hf_micro_batch} (the HF baseline would get a different effective batch)")
        if self.timed_steps < 1 or self.threads < 1:
            raise ValueError(f"need timed_steps >= 1 and threads >= 1, got {self.timed_steps}, {self.threads}")
        return self


QUICK = dict(samples_per_step=8, timed_steps=2, hf_micro_batch=4, peak_size=2048, peak_runs=3)


def settings() -> Settings:
    """The parent's settings (subprocess parts get them through the environment)."""
    raw = os.environ.get(SETTINGS_ENV)
    return Settings(**json.loads(raw)).check() if raw else Settings().check()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def encoded_samples(s: Settings):
    """(warm-up samples, timed samples, tokenizer): the same seeded samples for every part."""
    import random

    from finadapt.models import load_tokenizer
    from finadapt.train.config import SftData
    from finadapt.train.sft_data import encode_samples, training_samples

    n = s.samples_per_step * (s.timed_steps + 1)
    samples = training_samples(SftData(limit_per_task=200), seed=SEED)
    random.Random(SEED).shuffle(samples)
    if len(samples) < n:
        raise ValueError(f"only {len(samples)} SFT samples, the benchmark needs {n}")
    tokenizer = load_tokenizer(s.model)
    enc = encode_samples(samples[:n], tokenizer, "chat", 1024)
    pairs = list(zip(enc.ids, enc.prompt_lengths))
    return pairs[: s.samples_per_step], pairs[s.samples_per_step:], tokenizer


def sample_tokens(pairs) -> BatchTokens:
    """Real and target tokens of samples, no padding (what every correct implementation must process)."""
    real = sum(len(ids) for ids, _ in pairs)
    targets = sum(len(ids) - p for ids, p in pairs)
    return BatchTokens(real=real, padded=real, targets=targets)


def matmul_seconds(size: int, repeats: int) -> float:
    """Best of `repeats` timed fp32 square matmuls (after one untimed)."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return best


def part_peak(s: Settings) -> dict:
    import torch

    torch.set_num_threads(s.threads)
    out = {"load_at_start": os.getloadavg()[0]}
    for size in sorted({2048, s.peak_size}):
        runs = [2 * size**3 / matmul_seconds(size, s.peak_repeats) / 1e9 for _ in range(s.peak_runs)]
        out[f"mm{size}_gflops_runs"] = runs
        out[f"mm{size}_median_gflops"] = statistics.median(runs)
    out["median_gflops"] = out[f"mm{s.peak_size}_median_gflops"]
    return out


def _model(s: Settings):
    import torch

    from finadapt.models import load_model

    loaded = load_model(s.model, dtype="float32", device="cpu")
    loaded.model.train()
    torch.manual_seed(SEED)
    return loaded.model


def part_platform(s: Settings) -> dict:
    import torch

    from finadapt.train.batching import length_grouped_micro_batches
    from finadapt.train.config import OptimConfig
    from finadapt.train.step import SelectedTokenLoss, StepRunner, build_optimizer, build_scheduler

    torch.set_num_threads(s.threads)
    warm, timed, tok = encoded_samples(s)
    model = _model(s)
    optimizer = build_optimizer(model, OptimConfig())
    runner = StepRunner(SelectedTokenLoss(model), optimizer, build_scheduler(optimizer, OptimConfig(), 100), 1.0)

    def step(pairs) -> tuple[float, object]:
        start = time.perf_counter()
        ids, prompts = [p[0] for p in pairs], [p[1] for p in pairs]
        stats = runner.run(length_grouped_micro_batches(ids, prompts, s.micro_batch_tokens, tok.pad_token_id))
        return time.perf_counter() - start, stats

    step(warm)  # allocator and kernels
    seconds, total = [], BatchTokens(0, 0, 0)
    for k in range(s.timed_steps):
        elapsed, stats = step(timed[k * s.samples_per_step:(k + 1) * s.samples_per_step])
        seconds.append(elapsed)
        total = total + BatchTokens(stats.real_tokens, stats.padded_tokens, stats.target_tokens)
    return {"seconds": sum(seconds), "step_seconds": seconds, "useful_tokens": total.real,
            "padded_tokens": total.padded, "target_tokens": total.targets,
            "head_tokens": total.targets,  # SelectedTokenLoss: vocabulary projection at labelled positions only
            "useful_tokens_per_s": total.real / sum(seconds), "optimizer": type(optimizer).__name__,
            "fused_adamw": bool(optimizer.defaults.get("fused")), "peak_rss_mb": peak_rss_mb()}


def part_hf(s: Settings, strategy: str) -> dict:
    """HF Trainer on the timed samples, two epochs; the second (every timed sample once) is timed."""
    import torch
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    torch.set_num_threads(s.threads)
    _, timed, tok = encoded_samples(s)
    rows = [{"input_ids": ids.tolist(), "attention_mask": [1] * len(ids),
             "labels": [-100] * p + ids[p:].tolist()} for ids, p in timed]
    collator = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)
    batches: list[BatchTokens] = []

    def counting_collator(features):
        batch = collator(features)
        batches.append(batch_tokens(batch["attention_mask"], batch["labels"]))
        return batch

    class EpochTimer(TrainerCallback):
        def __init__(self):
            self.epoch_starts, self.step_ends = [], []

        def on_epoch_begin(self, args, state, control, **kw):
            self.epoch_starts.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            self.step_ends.append(time.perf_counter())

    timer = EpochTimer()
    accum = s.samples_per_step // s.hf_micro_batch
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=s.hf_micro_batch, gradient_accumulation_steps=accum,
            num_train_epochs=2, learning_rate=1e-4, weight_decay=0.1, max_grad_norm=1.0,
            lr_scheduler_type="cosine", save_strategy="no", report_to=[], logging_steps=1000,
            use_cpu=True, dataloader_num_workers=0, seed=SEED, remove_unused_columns=False,
            train_sampling_strategy=strategy)
        trainer = Trainer(model=_model(s), args=args, train_dataset=Dataset.from_list(rows),
                          data_collator=counting_collator, callbacks=[timer])
        trainer.train()
    if len(timer.epoch_starts) != 2 or len(timer.step_ends) != 2 * s.timed_steps:
        raise RuntimeError(f"expected 2 epochs of {s.timed_steps} steps, saw {len(timer.epoch_starts)} epochs "
                           f"and {len(timer.step_ends)} steps")
    ends = timer.step_ends[s.timed_steps:]
    seconds = [b - a for a, b in zip([timer.epoch_starts[1]] + ends[:-1], ends)]
    per_epoch = len(batches) // 2
    total = BatchTokens(0, 0, 0)
    for b in batches[per_epoch:]:
        total = total + b
    return {"strategy": strategy, "seconds": sum(seconds), "step_seconds": seconds, "useful_tokens": total.real,
            "padded_tokens": total.padded, "target_tokens": total.targets,
            "head_tokens": total.padded,  # HF computes logits at every position, padding included
            "useful_tokens_per_s": total.real / sum(seconds), "micro_batch": s.hf_micro_batch,
            "grad_accum": accum, "optimizer": args.optim, "peak_rss_mb": peak_rss_mb()}


def part_ray(s: Settings, workers: int) -> dict:
    from finadapt.train import SftConfig, run_training

    with tempfile.TemporaryDirectory() as tmp:
        cfg = SftConfig.model_validate({
            "model": {"spec": s.model}, "data": {"limit_per_task": 200},
            "batch": {"batch_size": s.samples_per_step, "grad_accum": 1, "micro_batch_tokens": s.micro_batch_tokens},
            "max_steps": s.timed_steps + 1, "eval_every_steps": 10_000,
            "validation": {"tasks": ["fpb"], "limit": 4},
            "ray": {"workers": workers, "cpus_per_worker": max(1, s.threads // workers), "num_cpus": s.threads},
            "checkpoint": {"storage_path": f"{tmp}/ckpt", "name": "bench", "save_optimizer": False},
            "output_dir": f"{tmp}/out"})
        run_training(cfg)
        history = [json.loads(x) for x in Path(f"{tmp}/out/metrics.jsonl").read_text().splitlines()]
    timed = [h for h in history if "step_seconds" in h][1:]
    seconds = sum(h["step_seconds"] for h in timed)
    real = sum(h["tokens"] for h in timed)
    targets = sum(h["target_tokens"] for h in timed)
    padded = sum(round(h["tokens"] / (1 - h["padding_share"])) for h in timed)
    out = {"workers": workers, "threads_per_worker": max(1, s.threads // workers), "seconds": seconds,
           "step_seconds": [h["step_seconds"] for h in timed], "useful_tokens": real, "padded_tokens": padded,
           "target_tokens": targets, "head_tokens": targets, "useful_tokens_per_s": real / seconds,
           "worker_peak_rss_mb": max(h.get("peak_rss_mb", 0) for h in timed),
           "samples": "the Ray stage's own data pipeline (its timed samples are not forced to match the in-process parts')"}
    if all("mfu" in h for h in timed):
        out["mfu_reported_by_loop"] = statistics.mean(h["mfu"] for h in timed)
    return out


def run_part(name: str, s: Settings) -> dict:
    start = time.perf_counter()
    load = os.getloadavg()[0]
    env = {**os.environ, SETTINGS_ENV: json.dumps(asdict(s))}
    proc = subprocess.run([sys.executable, __file__, "--part", name], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"part {name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = time.perf_counter() - start
    result["load_before"] = load
    print(f"{name}: {json.dumps(result)}", file=sys.stderr)
    return result


def summarise(parts: dict[str, dict], counts: ParamCounts, peaks: list[dict]) -> dict:
    """Utilisations (written into each part) and the headline summary; withholds utilisations above 1."""
    peak = max(p["median_gflops"] for p in peaks) * 1e9
    executed = {}
    for name, part in parts.items():
        if name == "peak":
            continue
        part["useful_flops"] = counts.useful_train_flops(part["useful_tokens"], part["target_tokens"])
        part["executed_flops"] = counts.executed_train_flops(part["padded_tokens"], part["head_tokens"])
        part["useful_mfu"] = utilisation(part["useful_flops"], part["seconds"], peak)
        part["executed_utilisation"] = executed[name] = utilisation(part["executed_flops"], part["seconds"], peak)
    flags = []
    too_high = implausible(executed)  # executed >= useful FLOPs, so this covers both figures
    if too_high:
        flags.append(f"executed utilisation above 1 for {', '.join(too_high)} with a peak of {peak / 1e9:.1f} "
                     f"GFLOP/s: the peak was measured low (busy cores?); every utilisation is withheld")
        for name in executed:
            parts[name]["useful_mfu"] = parts[name]["executed_utilisation"] = None
    baselines = {n: parts[n]["useful_tokens_per_s"] for n in parts if n in HF_STRATEGIES}
    best = max(baselines, key=baselines.get) if baselines else None
    summary = {
        "flop_convention": "6 FLOPs per parameter per token; useful = body x real tokens + head x target tokens; "
                           "executed = body x padded tokens + head x positions it ran at; attention products "
                           "not counted",
        "body_params": counts.body, "head_params": counts.head,
        "peak_gflops_used": peak / 1e9,
        "peak_definition": "higher of the medians measured before and after the training parts (each the "
                           "median of N fp32 square-matmul runs, best of 3 each, same threads)",
        "peak_medians_gflops": [p["median_gflops"] for p in peaks],
        "flags": flags,
    }
    if "platform" in parts:
        summary["platform_useful_mfu"] = parts["platform"]["useful_mfu"]
        summary["platform_executed_utilisation"] = parts["platform"]["executed_utilisation"]
        summary["platform_padding_share"] = 1 - parts["platform"]["useful_tokens"] / parts["platform"]["padded_tokens"]
    for name in baselines:
        summary[f"{name}_useful_mfu"] = parts[name]["useful_mfu"]
        summary[f"{name}_executed_utilisation"] = parts[name]["executed_utilisation"]
        if "platform" in parts:
            summary[f"platform_vs_{name}"] = parts["platform"]["useful_tokens_per_s"] / baselines[name]
    if best and "platform" in parts:
        summary["best_hf_baseline"] = best
        summary["platform_vs_best_hf"] = summary[f"platform_vs_{best}"]
        timed_sets = {n: (parts[n]["useful_tokens"], parts[n]["target_tokens"]) for n in ["platform", *baselines]}
        summary["same_timed_samples"] = len(set(timed_sets.values())) == 1
    if "ray1" in parts and "ray2" in parts:
        summary["ray2_vs_ray1"] = parts["ray2"]["useful_tokens_per_s"] / parts["ray1"]["useful_tokens_per_s"]
    summary["targets"] = dict(TARGETS)
    mfu, speedup = summary.get("platform_useful_mfu"), summary.get("platform_vs_best_hf")
    summary["targets_met"] = {"useful_mfu": None if mfu is None else mfu >= TARGETS["useful_mfu"],
                              "vs_best_hf": None if speedup is None else speedup >= TARGETS["vs_best_hf"]}
    return summary


PARTS = {"peak": part_peak, "platform": part_platform, "ray1": lambda s: part_ray(s, 1),
         "ray2": lambda s: part_ray(s, 2),
         **{name: (lambda s, strategy=strategy: part_hf(s, strategy)) for name, strategy in HF_STRATEGIES.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, results under the temp dir")
    parser.add_argument("--parts", nargs="+", choices=[p for p in PARTS if p != "peak"], default=None,
                        help=f"training parts to run (default: {' '.join(DEFAULT_PARTS)})")
    parser.add_argument("--model", default=None, help="model spec (default: the embedded SmolLM2-135M)")
    parser.add_argument("--out", type=Path, default=None, help=f"result file (default {OUT}; --quick: {QUICK_OUT})")
    args = parser.parse_args(argv)
    s = replace(Settings(), **QUICK) if args.quick else Settings()
    if args.model:
        s = replace(s, model=args.model)
    s.check()
    out = args.out or (QUICK_OUT if args.quick else OUT)

    from finadapt.models import load_model

    counts = param_counts(load_model(s.model, dtype="float32", device="cpu").model)
    peaks = [run_part("peak", s)]
    parts = {name: run_part(name, s) for name in (args.parts or DEFAULT_PARTS)}
    peaks.append(run_part("peak", s))
    summary = summarise(parts, counts, peaks)
    for _ in range(MAX_PEAK_REMEASURES):
        if not summary["flags"]:
            break
        print(f"re-measuring the peak: {summary['flags'][0]}", file=sys.stderr)
        peaks.append(run_part("peak", s))
        summary = summarise(parts, counts, peaks)
    result = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "threads": s.threads},
              "config": {**asdict(s), "quick": args.quick, "template": "chat", "loss": "response tokens only"},
              "summary": summary, "parts": parts, "peaks": peaks}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--part":
        print(json.dumps(PARTS[sys.argv[2]](settings())))
    else:
        sys.exit(main())
