"""FLOP accounting and model FLOPs utilisation: what share of the device's peak the training step turns
into model math. One home for the training loop and the speed benchmarks.

Convention: 6 FLOPs per parameter per token for training (forward 2 + backward 4); attention's
score/value products are not counted (a few per cent at these lengths), so utilisations are slightly
conservative. Parameters are split in two, because the platform runs them on different token sets:

  body  every parameter except lookups (embeddings) and the vocabulary head; it runs at every
        position fed to the model, so its useful work is the real (non-padding) tokens;
  head  the vocabulary projection (a tied head counts once); useful only where a loss is taken.

useful FLOPs   = 6 (body x real tokens + head x target tokens)   the same for any correct implementation
executed FLOPs = 6 (body x padded tokens + head x positions the head ran at)   what an implementation did

The peak is measured by a matmul microbenchmark in the same process and thread setting (CPU), or given;
a utilisation is never reported above 1.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from finadapt.train.batching import IGNORE

_PEAK_CACHE: dict[tuple, float] = {}


@dataclass(frozen=True)
class ParamCounts:
    body: int
    head: int

    @property
    def matmul(self) -> int:
        """Every parameter doing matmul work per token (the plain 6N figure's N)."""
        return self.body + self.head

    def useful_train_flops(self, real_tokens: int, target_tokens: int) -> float:
        return 6.0 * (self.body * real_tokens + self.head * target_tokens)

    def executed_train_flops(self, padded_tokens: int, head_tokens: int) -> float:
        return 6.0 * (self.body * padded_tokens + self.head * head_tokens)


def param_counts(model: torch.nn.Module) -> ParamCounts:
    """(body, head) parameter counts of a causal LM; embedding lookups count in neither, a tied head once."""
    if hasattr(model, "get_base_model"):  # peft
        model = model.get_base_model()
    head_module = model.get_output_embeddings()
    if head_module is None:
        raise ValueError(f"{type(model).__name__} has no output embeddings: cannot split body and head")
    head_ids = {id(p) for p in head_module.parameters()}
    lookup_ids = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    params = list(model.parameters())  # shared (tied) tensors appear once
    head = sum(p.numel() for p in params if id(p) in head_ids)
    body = sum(p.numel() for p in params if id(p) not in head_ids and id(p) not in lookup_ids)
    return ParamCounts(body=body, head=head)


@dataclass(frozen=True)
class BatchTokens:
    real: int  # non-padding positions fed to the model
    padded: int  # every position fed (batch x width)
    targets: int  # positions whose next token has a label (where a loss is taken)

    def __add__(self, other: BatchTokens) -> BatchTokens:
        return BatchTokens(self.real + other.real, self.padded + other.padded, self.targets + other.targets)


def batch_tokens(attention_mask: torch.Tensor, labels: torch.Tensor) -> BatchTokens:
    """Token counts of a collated causal-LM batch (labels unshifted, IGNORE where no loss)."""
    return BatchTokens(real=int(attention_mask.sum()), padded=int(attention_mask.numel()),
                       targets=int((labels[:, 1:] != IGNORE).sum()))


def utilisation(flops: float, seconds: float, peak_flops: float) -> float:
    if seconds <= 0 or peak_flops <= 0:
        raise ValueError(f"utilisation needs positive time and peak (got {seconds} s, {peak_flops} FLOP/s)")
    return flops / seconds / peak_flops


def implausible(utilisations: dict[str, float]) -> list[str]:
    """Names whose utilisation exceeds 1: the measured peak is too low (taken while the cores were busy)."""
    return sorted(name for name, value in utilisations.items() if value > 1.0)


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
