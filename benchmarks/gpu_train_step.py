"""The training step on a GPU, without Ray: bf16 correctness and speed against plain HF training.

Runs where only torch + transformers exist (e.g. a bare H100 box): `PYTHONPATH=platform python
benchmarks/gpu_train_step.py`. Same process, same data, same shape (Pythia-1.4B config, random init,
no download), sequences of 2048 tokens:

  baseline   plain HF training: `model(input_ids, labels=...)`, bf16 autocast, torch AdamW (default)
  platform   `finadapt.train.step`: SelectedTokenLoss + StepRunner (token-weighted accumulation),
             bf16 autocast, fused AdamW; optionally `torch.compile`
  checks     bf16 loss of the platform's loss module vs the HF loss on the same batch; the response-only
             SFT path (length-grouped micro-batches) runs and masks prompts

MFU = 6 N tokens / time / peak, N = parameters doing matmul work (untied input embedding excluded);
the peak is measured with a bf16 matmul in the same run (also shown against the 989 TFLOPS datasheet).
Writes benchmarks/results/gpu_train_step.json (or $OUT/gpu_train_step.json when OUT is set).
"""
from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from finadapt.train import flops  # noqa: E402
from finadapt.train.batching import MicroBatch, length_grouped_micro_batches  # noqa: E402
from finadapt.train.step import SelectedTokenLoss, StepRunner, build_optimizer  # noqa: E402

SHAPE = os.environ.get("GPU_BENCH_SHAPE", "pythia-1.4b")
SEQ = int(os.environ.get("GPU_BENCH_SEQ", "2048"))
MICRO = int(os.environ.get("GPU_BENCH_MICRO", "8"))
ACCUM = int(os.environ.get("GPU_BENCH_ACCUM", "2"))
STEPS = int(os.environ.get("GPU_BENCH_STEPS", "6"))
WARMUP = 2
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
AMP = torch.bfloat16 if DEVICE == "cuda" else None
SHAPES = {
    "pythia-1.4b": dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=16, intermediate_size=8192),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256),
}


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def build_model():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(vocab_size=50304, max_position_embeddings=2048, rotary_pct=0.25,
                           use_parallel_residual=True, tie_word_embeddings=False, **SHAPES[SHAPE])
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return GPTNeoXForCausalLM(config).to(DEVICE).train()


def batches(n: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(0, 50304, (MICRO, SEQ), generator=gen) for _ in range(n)]


def time_steps(step_fn, data: list[torch.Tensor]) -> dict:
    per_step = [data[i * ACCUM:(i + 1) * ACCUM] for i in range(WARMUP + STEPS)]
    for chunk in per_step[:WARMUP]:
        step_fn(chunk)
    sync()
    start = time.perf_counter()
    losses = [step_fn(chunk) for chunk in per_step[WARMUP:]]
    sync()
    seconds = time.perf_counter() - start
    tokens = STEPS * ACCUM * MICRO * SEQ
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds, "last_loss": float(losses[-1]),
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else None}


def baseline(data) -> dict:
    model = build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)

    def step(chunk):
        for ids in chunk:
            ids = ids.to(DEVICE)
            with torch.autocast(DEVICE, dtype=AMP, enabled=AMP is not None):
                loss = model(input_ids=ids, labels=ids).loss / len(chunk)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach() * len(chunk)

    out = time_steps(step, data)
    out["n_matmul"] = flops.param_counts(model).matmul
    del model, opt
    return out


def platform(data, compile_model: bool) -> dict:
    model = build_model()
    cfg = SimpleNamespace(lr=1e-4, weight_decay=0.1, betas=(0.9, 0.999), eps=1e-8, fused=None)
    opt = build_optimizer(model, cfg)
    loss_module = SelectedTokenLoss(model)
    if compile_model:
        loss_module = torch.compile(loss_module)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    runner = StepRunner(loss_module, opt, sched, max_grad_norm=1.0, device=DEVICE, autocast_dtype=AMP)

    def step(chunk):
        mbs = [MicroBatch(ids, ids.clone(), ids.numel()) for ids in chunk]
        return runner.run(mbs).loss

    start = time.perf_counter()
    out = time_steps(step, data)
    out["wall_with_warmup"] = time.perf_counter() - start
    out["fused_adamw"] = bool(opt.defaults.get("fused"))
    del model, opt, runner, loss_module
    return out


def checks() -> dict:
    model = build_model()
    ids = batches(1)[0][:2, :512].to(DEVICE)
    with torch.no_grad(), torch.autocast(DEVICE, dtype=AMP, enabled=AMP is not None):
        ours = SelectedTokenLoss(model)(ids, ids) / (ids.shape[0] * (ids.shape[1] - 1))
        theirs = model(input_ids=ids, labels=ids).loss
    # response-only SFT path: prompts masked, only response positions reach the head
    gen = torch.Generator().manual_seed(2)
    samples = [torch.randint(0, 50304, (n,), generator=gen).numpy() for n in (90, 140, 60, 300)]
    mbs = length_grouped_micro_batches(samples, [n - 5 for n in (90, 140, 60, 300)], 1024, pad_id=0)
    with torch.no_grad(), torch.autocast(DEVICE, dtype=AMP, enabled=AMP is not None):
        sft_losses = [float(SelectedTokenLoss(model)(m.input_ids.to(DEVICE), m.labels.to(DEVICE))) for m in mbs]
    out = {"bf16_loss_platform": float(ours), "bf16_loss_hf": float(theirs),
           "bf16_abs_diff": abs(float(ours) - float(theirs)),
           "sft_target_tokens": sum(m.target_tokens for m in mbs), "sft_losses_finite": all(
               l == l and l < float("inf") for l in sft_losses)}
    del model
    return out


def free() -> None:
    gc.collect()
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def main() -> None:
    result = {"device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu", "torch": torch.__version__,
              "shape": SHAPE, "seq": SEQ, "micro_batch": MICRO, "grad_accum": ACCUM, "timed_steps": STEPS}
    import transformers

    result["transformers"] = transformers.__version__
    if DEVICE == "cuda":
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        best = float("inf")
        for _ in range(10):
            sync()
            t = time.perf_counter()
            a @ a
            sync()
            best = min(best, time.perf_counter() - t)
        result["peak_tflops_measured"] = 2 * 8192**3 / best / 1e12
        del a
    else:
        result["peak_tflops_measured"] = flops.matmul_peak_flops() / 1e12
    result["checks"] = checks()
    free()
    data = batches((WARMUP + STEPS) * ACCUM)
    result["baseline_hf"] = baseline(data)
    free()
    result["platform"] = platform(data, compile_model=False)
    free()
    if os.environ.get("GPU_BENCH_COMPILE", "1") == "1":
        try:
            result["platform_compiled"] = platform(data, compile_model=True)
        except Exception as err:  # report, never hide
            result["platform_compiled"] = {"error": repr(err)[:500]}
        free()
    n = result["baseline_hf"]["n_matmul"]
    for key in ("baseline_hf", "platform", "platform_compiled"):
        part = result.get(key, {})
        if "tokens_per_s" in part:
            part["mfu_measured_peak"] = 6 * n * part["tokens_per_s"] / (result["peak_tflops_measured"] * 1e12)
            part["mfu_datasheet_989"] = 6 * n * part["tokens_per_s"] / 989e12
            part["speedup_vs_baseline"] = part["tokens_per_s"] / result["baseline_hf"]["tokens_per_s"]
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path(__file__).parent / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_train_step.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
