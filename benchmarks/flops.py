"""FLOP accounting for the speed benchmarks: count the work a run needs, apart from the work it executes.

Convention: 6 FLOPs per parameter per token for training (forward 2 + backward 4), 2 for inference;
attention's score/value products are not counted (a few per cent at these lengths), so utilisations
are slightly conservative. Parameters are split in two, because the platform runs them on different
token sets:

  body  every parameter except lookups (embeddings) and the vocabulary head; it runs at every
        position fed to the model, so its useful work is the real (non-padding) tokens;
  head  the vocabulary projection; useful only where a loss/score is taken (the target positions).

useful FLOPs   = 6 (body x real tokens + head x target tokens)   the same for any correct implementation
executed FLOPs = 6 (body x padded tokens + head x positions the head ran at)   what an implementation did
"""
from __future__ import annotations

from dataclasses import dataclass

IGNORE = -100


@dataclass(frozen=True)
class ParamCounts:
    body: int
    head: int

    def useful_train_flops(self, real_tokens: int, target_tokens: int) -> float:
        return 6.0 * (self.body * real_tokens + self.head * target_tokens)

    def executed_train_flops(self, padded_tokens: int, head_tokens: int) -> float:
        return 6.0 * (self.body * padded_tokens + self.head * head_tokens)


def param_counts(model) -> ParamCounts:
    """(body, head) parameter counts of a causal LM; embedding lookups count in neither, a tied head once."""
    import torch

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


def batch_tokens(attention_mask, labels) -> BatchTokens:
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
