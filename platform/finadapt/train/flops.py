"""Model FLOPs utilisation: what share of the device's peak the training step turns into model math.

FLOPs follow the 6 x N per token convention (N = parameters that do matmul work: the input embedding
is a lookup and is left out unless it is tied to the output head), counted for the work the platform
does: the model body on every real token, the output head only at labelled positions (`useful_flops`;
`executed_flops` with padded tokens adds the padding). The peak is measured by a matmul microbenchmark
in the same process and thread setting (CPU), or given; a utilisation is never reported above 1.
"""
from __future__ import annotations

import time

import torch

_PEAK_CACHE: dict[tuple, float] = {}


def matmul_peak_flops(size: int = 2048, repeats: int = 8, dtype: torch.dtype = torch.float32,
                      device: str = "cpu", fresh: bool = False) -> float:
    """Best-of-N square matmul FLOP/s with the current torch thread count (cached; `fresh` measures
    again and keeps the higher figure: a measurement on busy cores is too low)."""
    key = (size, dtype, device, torch.get_num_threads())
    if key in _PEAK_CACHE and not fresh:
        return _PEAK_CACHE[key]
    previous = _PEAK_CACHE.get(key, 0.0)
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
    _PEAK_CACHE[key] = max(previous, 2 * size**3 / best)
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
    """What the step computes when the output head runs on labelled positions only: the body on
    `tokens` positions (pass the padded count for the executed figure), the head on `target_tokens`."""
    return 6.0 * (n_matmul_params - n_head_params) * tokens + 6.0 * n_head_params * target_tokens


def useful_flops(n_matmul_params: int, n_head_params: int, real_tokens: int, target_tokens: int) -> float:
    """The work an MFU counts: the model body on real (non-padding) tokens + the head where it runs."""
    return executed_flops(n_matmul_params, n_head_params, real_tokens, target_tokens)


class PeakFlops:
    """The device peak a utilisation is divided by: given (config) or measured in this process.

    A utilisation above 1 is impossible: it means the peak was measured while the cores were busy.
    Then the peak is measured again (at most `remeasures` times, keeping the highest); if a step still
    exceeds it (or the peak was given), the utilisation is reported as 1.0 and flagged as capped.
    """

    def __init__(self, given: float | None = None, device: str = "cpu", remeasures: int = 2):
        self.given, self.device, self.remeasures = given, device, remeasures
        self.value = given or matmul_peak_flops(device=device)

    def utilisation(self, flop: float, device_seconds: float) -> tuple[float, bool]:
        """(flop / (device_seconds x peak), capped?) with the rule above."""
        value = flop / (device_seconds * self.value)
        while value > 1 and self.given is None and self.remeasures > 0:
            self.remeasures -= 1
            self.value = max(self.value, matmul_peak_flops(device=self.device, fresh=True))
            value = flop / (device_seconds * self.value)
        return (1.0, True) if value > 1 else (value, False)
