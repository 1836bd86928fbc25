"""Training speed on the same SFT data with the embedded model, measured in one run.

Each part runs in its own subprocess (clean peak memory), on the same seeded instruction samples
(real FPB / FiQA-SA / Headlines / NER training rows, chat template, loss on responses only):

  peak      fp32 matmul microbenchmark with the threads the training uses (best and median)
  hf        baseline: Hugging Face `Trainer`, dynamic padding (DataCollatorForSeq2Seq), same optimizer
            settings and effective batch; useful (non-pad) tokens/s
  platform  the platform's step (`finadapt.train.step`): length-grouped micro-batches, logits only at
            response positions, fused AdamW, token-weighted accumulation; in-process, no Ray
  ray1/ray2 the full Ray Train stage (`run_training`) with 1 worker x 2 threads and 2 workers x 1 thread

MFU = 6 N x useful tokens / time / peak (N = 134.5M, the 6N convention). Steps after the first are timed.
Writes benchmarks/results/train_speed.json. Run: `make bench-train` (about 15 minutes on 2 cores).
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).parent / "results" / "train_speed.json"
MODEL = os.environ.get("TRAIN_BENCH_MODEL", "embedded:smollm2-135m-instruct")
SAMPLES_PER_STEP = int(os.environ.get("TRAIN_BENCH_STEP_SAMPLES", "32"))
TIMED_STEPS = int(os.environ.get("TRAIN_BENCH_STEPS", "3"))
THREADS = int(os.environ.get("TRAIN_BENCH_THREADS", str(os.cpu_count() or 2)))
HF_MICRO_BATCH = 8
SEED = 0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def encoded_samples(n: int):
    """The same seeded samples for every part: one warm-up step + the timed steps."""
    import random

    from finadapt.models import load_tokenizer
    from finadapt.train.config import SftData
    from finadapt.train.sft_data import encode_samples, training_samples

    samples = training_samples(SftData(limit_per_task=200), seed=SEED)
    random.Random(SEED).shuffle(samples)
    tokenizer = load_tokenizer(MODEL)
    return encode_samples(samples[:n], tokenizer, "chat", 1024), tokenizer


def part_peak() -> dict:
    import torch

    from finadapt.train.flops import matmul_peak_flops

    torch.set_num_threads(THREADS)
    out = {}
    for size in (2048, 4096):
        runs = []
        for _ in range(5):
            import finadapt.train.flops as fl

            fl._PEAK_CACHE.clear()
            runs.append(matmul_peak_flops(size=size, repeats=3))
        out[f"mm{size}_best_gflops"] = max(runs) / 1e9
        out[f"mm{size}_median_gflops"] = statistics.median(runs) / 1e9
    return out


def _model():
    import torch

    from finadapt.models import load_model

    loaded = load_model(MODEL, dtype="float32", device="cpu")
    loaded.model.train()
    torch.manual_seed(SEED)
    return loaded.model


def part_platform() -> dict:
    import torch

    from finadapt.train.batching import length_grouped_micro_batches
    from finadapt.train.config import OptimConfig
    from finadapt.train.step import SelectedTokenLoss, StepRunner, build_optimizer, build_scheduler

    torch.set_num_threads(THREADS)
    enc, tok = encoded_samples(SAMPLES_PER_STEP * (TIMED_STEPS + 1))
    model = _model()
    optimizer = build_optimizer(model, OptimConfig())
    runner = StepRunner(SelectedTokenLoss(model), optimizer, build_scheduler(optimizer, OptimConfig(), 100), 1.0)
    times, real, padded = [], 0, 0
    for step in range(TIMED_STEPS + 1):
        sl = slice(step * SAMPLES_PER_STEP, (step + 1) * SAMPLES_PER_STEP)
        mbs = length_grouped_micro_batches(enc.ids[sl], enc.prompt_lengths[sl], 4096, tok.pad_token_id)
        stats = runner.run(mbs)
        if step:  # the first step warms up allocator and kernels
            times.append(stats.seconds)
            real += stats.real_tokens
            padded += stats.padded_tokens
    return {"seconds": sum(times), "useful_tokens": real, "padded_tokens": padded,
            "useful_tokens_per_s": real / sum(times), "optimizer": type(optimizer).__name__,
            "fused_adamw": bool(optimizer.defaults.get("fused")), "peak_rss_mb": peak_rss_mb()}


def part_hf() -> dict:
    import torch
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    torch.set_num_threads(THREADS)
    enc, tok = encoded_samples(SAMPLES_PER_STEP * (TIMED_STEPS + 1))
    rows = [{"input_ids": ids.tolist(), "attention_mask": [1] * len(ids),
             "labels": [-100] * p + ids[p:].tolist()} for ids, p in zip(enc.ids, enc.prompt_lengths)]
    collator = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)
    counts = {"real": [], "padded": []}

    def counting_collator(features):
        batch = collator(features)
        counts["real"].append(int(batch["attention_mask"].sum()))
        counts["padded"].append(int(batch["attention_mask"].numel()))
        return batch

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.starts, self.ends = [], []

        def on_step_begin(self, args, state, control, **kw):
            self.starts.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            self.ends.append(time.perf_counter())

    timer = StepTimer()
    accum = SAMPLES_PER_STEP // HF_MICRO_BATCH
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=HF_MICRO_BATCH, gradient_accumulation_steps=accum,
            max_steps=TIMED_STEPS + 1, learning_rate=1e-4, weight_decay=0.1, max_grad_norm=1.0,
            lr_scheduler_type="cosine", save_strategy="no", report_to=[], logging_steps=1000,
            use_cpu=True, dataloader_num_workers=0, seed=SEED, remove_unused_columns=False)
        trainer = Trainer(model=_model(), args=args, train_dataset=Dataset.from_list(rows),
                          data_collator=counting_collator, callbacks=[timer])
        trainer.train()
    # on_step_begin fires per micro-batch in some versions: use the optimizer-step boundaries (ends)
    step_seconds = [b - a for a, b in zip(timer.ends[:-1], timer.ends[1:])]
    micro = len(counts["real"]) // (TIMED_STEPS + 1)
    real = sum(counts["real"][micro:])
    padded = sum(counts["padded"][micro:])
    seconds = sum(step_seconds)
    return {"seconds": seconds, "useful_tokens": real, "padded_tokens": padded,
            "useful_tokens_per_s": real / seconds, "micro_batch": HF_MICRO_BATCH, "grad_accum": accum,
            "optimizer": args.optim, "peak_rss_mb": peak_rss_mb()}


def part_ray(workers: int) -> dict:
    from finadapt.train import SftConfig, run_training

    with tempfile.TemporaryDirectory() as tmp:
        cfg = SftConfig.model_validate({
            "model": {"spec": MODEL}, "data": {"limit_per_task": 200},
            "batch": {"batch_size": SAMPLES_PER_STEP, "grad_accum": 1, "micro_batch_tokens": 4096},
            "max_steps": TIMED_STEPS + 1, "eval_every_steps": 10_000,
            "validation": {"tasks": ["fpb"], "limit": 4},
            "scaling": {"num_workers": workers, "cpus_per_worker": THREADS // workers},
            "checkpoint": {"storage_path": f"{tmp}/ckpt", "name": "bench", "save_optimizer": False},
            "output_dir": f"{tmp}/out", "num_cpus": THREADS})
        run_training(cfg)
        history = [json.loads(x) for x in Path(f"{tmp}/out/metrics.jsonl").read_text().splitlines()]
    timed = history[1:]
    seconds = sum(h["step_seconds"] for h in timed)
    real = sum(h["tokens"] for h in timed)
    return {"workers": workers, "threads_per_worker": THREADS // workers, "seconds": seconds,
            "useful_tokens": real, "useful_tokens_per_s": real / seconds,
            "worker_peak_rss_mb": max(h.get("peak_rss_mb", 0) for h in timed),
            "mfu_reported_by_loop": statistics.mean(h["mfu"] for h in timed)}


PARTS = {"peak": part_peak, "platform": part_platform, "hf": part_hf,
         "ray1": lambda: part_ray(1), "ray2": lambda: part_ray(2)}


def run_part(name: str) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--part", name], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"part {name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = time.perf_counter() - start
    result["load_before"] = os.getloadavg()[0]
    print(f"{name}: {json.dumps(result)}", file=sys.stderr)
    return result


def main() -> None:
    from finadapt.models import load_model
    from finadapt.train.flops import matmul_params

    n_params = matmul_params(load_model(MODEL, dtype="float32", device="cpu").model)
    parts = {name: run_part(name) for name in ("peak", "platform", "hf", "ray1", "ray2")}
    peak_gflops = parts["peak"]["mm4096_median_gflops"]

    def mfu(tps: float) -> float:
        return 6 * n_params * tps / (peak_gflops * 1e9)

    for name in ("platform", "hf", "ray1", "ray2"):
        parts[name]["mfu"] = mfu(parts[name]["useful_tokens_per_s"])
    summary = {
        "matmul_params": n_params,
        "peak_gflops_used": peak_gflops,
        "peak_definition": "median of 5 fp32 4096x4096 matmul runs (best of 3 each), same threads",
        "platform_vs_hf": parts["platform"]["useful_tokens_per_s"] / parts["hf"]["useful_tokens_per_s"],
        "platform_mfu": parts["platform"]["mfu"], "hf_mfu": parts["hf"]["mfu"],
        "ray2_vs_ray1": parts["ray2"]["useful_tokens_per_s"] / parts["ray1"]["useful_tokens_per_s"],
        "targets": {"mfu": 0.75, "vs_hf": 1.5},
    }
    result = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "threads": THREADS},
              "config": {"model": MODEL, "samples_per_step": SAMPLES_PER_STEP, "timed_steps": TIMED_STEPS,
                         "template": "chat", "loss": "response tokens only"},
              "summary": summary, "parts": parts}
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--part":
        print(json.dumps(PARTS[sys.argv[2]]()))
    else:
        main()
