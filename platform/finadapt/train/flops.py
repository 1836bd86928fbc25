"""Model FLOPs utilisation: what share of the device's peak the training step turns into model math.

MFU uses the usual convention, 6 x N FLOPs per trained token (N = parameters that do matmul work:
the input embedding is a lookup and is left out unless it is tied to the output head). The peak is
measured by a matmul microbenchmark in the same process and thread setting (CPU), or given.
"""
from __future__ import annotations

import time

import torch

_PEAK_CACHE: dict[tuple, float] = {}


def matmul_peak_flops(size: int = 2048, repeats: int = 8, dtype: torch.dtype = torch.float32,
                      device: str = "cpu") -> float:
    """Best-of-N square matmul FLOP/s with the current torch thread count."""
    key = (size, dtype, device, torch.get_num_threads())
    if key in _PEAK_CACHE:
        return _PEAK_CACHE[key]
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    best = float("inf")
    for _ in range(repeats + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    _PEAK_CACHE[key] = 2 * size**3 / best
    return _PEAK_CACHE[key]


def matmul_params(model: torch.nn.Module) -> int:
    """Parameters doing matmul work per token: all, minus an untied input embedding."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    total = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if embed is not None and (head is None or head.weight is not embed.weight):
        total -= embed.weight.numel()
    return total


def head_params(model: torch.nn.Module) -> int:
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    head = model.get_output_embeddings()
    return head.weight.numel() if head is not None else 0


def train_flops(n_matmul_params: int, tokens: int) -> float:
    """6 N per token (forward 2N + backward 4N)."""
    return 6.0 * n_matmul_params * tokens


def executed_flops(n_matmul_params: int, n_head_params: int, tokens: int, target_tokens: int) -> float:
    """What the step really computes when the output head runs on labelled positions only."""
    return 6.0 * (n_matmul_params - n_head_params) * tokens + 6.0 * n_head_params * target_tokens
