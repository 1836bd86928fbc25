"""Evaluation speed on the same 200 FPB test prompts with the embedded model, one run, one process.

(a) reference: a bare batched forward pass over the same prompt tokens, packed densely
    (no padding at all, full logits) — what the model body costs for these tokens;
(a') for orientation, a naive padded batch of 16 (what a plain HF loop does);
(b) `choice` mode: real prompt tokens/s as a fraction of (a) (goal >= 0.9);
(c) `compat` mode at FLARE's generation settings (greedy, no stop string, 256-token cap):
    samples/s, and the choice/compat speed ratio; plus both modes from one shared prefill;
(d) agreement of choice and compat predictions where compat produced a label.

Writes benchmarks/results/eval_speed.json. Run: `make bench-eval` (about 6 minutes on 2 cores).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from finadapt.evaluate.parsing import parse_choice_compat
from finadapt.evaluate.predictor import FlarePredictor
from finadapt.evaluate.runner import select_rows
from finadapt.evaluate.scorer import encode_prompts
from finadapt.evaluate.wrappers import render_prompt
from finadapt.tasks import load_samples

N_SAMPLES = int(os.environ.get("EVAL_BENCH_SAMPLES", "200"))
REPEATS = int(os.environ.get("EVAL_BENCH_REPEATS", "2"))
WRAPPER = "chat"
OUT = Path(__file__).parent / "results" / "eval_speed.json"


def timed(fn, repeats: int = REPEATS) -> tuple[float, object]:
    """Median wall time over `repeats` runs (after the caller's warm-up) and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def dense_forward(model, prompt_ids: list[list[int]], row_len: int = 256, rows_per_batch: int = 8) -> int:
    """Reference: every prompt token packed back to back, no pads, full-vocabulary logits."""
    flat = torch.tensor([t for ids in prompt_ids for t in ids])
    n_rows = -(-len(flat) // row_len)
    flat = torch.cat([flat, flat[: n_rows * row_len - len(flat)]])  # wrap to fill the last row
    rows = flat.view(n_rows, row_len)
    with torch.inference_mode():
        for start in range(0, n_rows, rows_per_batch):
            model(input_ids=rows[start:start + rows_per_batch]).logits
    return len(flat)


def naive_padded(model, tokenizer, prompts: list[str], batch: int = 16) -> None:
    """Orientation: a plain padded batch of 16 in file order, full logits."""
    tokenizer.padding_side = "right"
    with torch.inference_mode():
        for start in range(0, len(prompts), batch):
            enc = tokenizer(prompts[start:start + batch], return_tensors="pt", padding=True)
            model(**enc).logits


def main() -> int:
    torch.manual_seed(0)
    # the same seeded sample the evaluation's `--limit` takes (the split file is grouped by label)
    samples = select_rows("fpb", load_samples("fpb", "test"), N_SAMPLES, seed=0)
    rows = [{**s.to_row(), "kind": "classification"} for s in samples]
    predictor = FlarePredictor("embedded:smollm2-135m-instruct", modes=("choice",), wrapper=WRAPPER)
    model, tokenizer = predictor.loaded.model, predictor.loaded.tokenizer
    prompts = [render_prompt(r["query"], WRAPPER, tokenizer) for r in rows]
    prompt_ids = [e.ids for e in encode_prompts(tokenizer, prompts, 1024)]
    real_tokens = sum(len(ids) for ids in prompt_ids)
    print(f"{len(rows)} FPB test prompts, {real_tokens} real prompt tokens, torch threads {torch.get_num_threads()}")

    # warm-up (allocator, kernels) on a few prompts for every path
    dense_forward(model, prompt_ids[:16])
    predictor.scorer.score(rows[:16])
    predictor.generator.generate(rows[:8], 8)

    t_dense, n_dense = timed(lambda: dense_forward(model, prompt_ids))
    dense_tps = n_dense / t_dense
    print(f"(a) dense packed forward: {dense_tps:.1f} tok/s")
    t_naive, _ = timed(lambda: naive_padded(model, tokenizer, prompts), repeats=1)
    naive_tps = real_tokens / t_naive
    print(f"(a') naive padded batch 16: {naive_tps:.1f} real tok/s")

    t_choice, choice = timed(lambda: predictor.scorer.score(rows))
    choice_tps = real_tokens / t_choice
    print(f"(b) choice: {choice_tps:.1f} real tok/s = {choice_tps / dense_tps:.3f} x dense")

    t_compat, compat = timed(lambda: predictor.generator.generate(rows, 256), repeats=1)
    compat_sps = len(rows) / t_compat
    choice_sps = len(rows) / t_choice
    print(f"(c) compat: {compat_sps:.2f} samples/s; choice {choice_sps:.2f} samples/s; ratio {choice_sps / compat_sps:.1f}x")

    both = FlarePredictor.__new__(FlarePredictor)
    both.__dict__.update(predictor.__dict__, modes=("choice", "compat"))
    import pandas as pd

    t_both, _ = timed(lambda: both(pd.DataFrame(rows)), repeats=1)
    print(f"    choice+compat from one shared prefill: {len(rows) / t_both:.2f} samples/s")

    compat_preds = [parse_choice_compat(g["generation"], r["choices"]) for g, r in zip(compat, rows)]
    pairs = [(c["pred"], p) for c, p in zip(choice, compat_preds) if p is not None]
    agreement = sum(a == b for a, b in pairs) / len(pairs) if pairs else float("nan")
    gold = [r["gold"] for r in rows]
    print(f"(d) choice/compat agreement on {len(pairs)}/{len(rows)} rows where compat gave a label: {agreement:.3f}")

    result = {
        "benchmark": "eval_speed",
        "model": "embedded:smollm2-135m-instruct",
        "wrapper": WRAPPER,
        "samples": len(rows),
        "real_prompt_tokens": real_tokens,
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
                 "threads": torch.get_num_threads()},
        "repeats": REPEATS,
        "a_dense_forward_tok_s": dense_tps,
        "a_naive_padded_batch16_real_tok_s": naive_tps,
        "b_choice_real_tok_s": choice_tps,
        "b_choice_over_dense": choice_tps / dense_tps,
        "b_goal": 0.9,
        "c_compat_samples_s": compat_sps,
        "c_choice_samples_s": choice_sps,
        "c_choice_over_compat_speed": choice_sps / compat_sps,
        "c_compat_generation_settings": {"greedy": True, "max_new_tokens": 256, "stop": "EOS only"},
        "c_compat_generated_tokens_mean": statistics.mean(g["generated_tokens"] for g in compat),
        "c_shared_prefill_choice_and_compat_samples_s": len(rows) / t_both,
        "d_agreement_where_compat_labelled": agreement,
        "d_compat_labelled_rows": len(pairs),
        "choice_accuracy": sum(c["pred"] == g for c, g in zip(choice, gold)) / len(rows),
        "gold_distribution": {str(k): gold.count(k) for k in sorted(set(gold))},
        "compat_accuracy": sum(p == g for p, g in zip(compat_preds, gold)) / len(rows),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
