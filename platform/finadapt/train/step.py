"""One optimizer step, plain PyTorch (no Ray): runs the same on a laptop, a GPU box, or in a Ray worker.

The loss is a token-weighted mean over every target token of the optimizer step on all workers:
micro-batches accumulate *summed* losses, and the gradients are scaled once by
world_size / global_targets (DDP averages over workers), so a short micro-batch weighs no more
per token than a long one. Logits are computed only where a label exists: for response-only SFT
that skips the vocabulary projection of every prompt token.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

from finadapt.train.batching import IGNORE, MicroBatch

if TYPE_CHECKING:  # keeps this module importable without pydantic (bare GPU boxes)
    from finadapt.train.config import OptimConfig


class SelectedTokenLoss(torch.nn.Module):
    """Wraps a causal LM: forward(input_ids, labels) -> summed CE over labelled next-token positions.

    A module (not a function) so DDP wraps it and its gradient hooks fire.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def _parts(self):
        model = self.model
        if hasattr(model, "get_base_model"):  # peft
            model = model.get_base_model()
        return model.get_decoder(), model.get_output_embeddings()

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        decoder, head = self._parts()
        hidden = decoder(input_ids=input_ids, use_cache=False).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != IGNORE
        selected = hidden[:, :-1][keep]
        logits = head(selected).float()
        return F.cross_entropy(logits, targets[keep], reduction="sum")


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only (not biases / norm weights), the usual AdamW practice."""
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = decay_groups(model, cfg.weight_decay)
    kwargs = dict(lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    if cfg.fused is not False:
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            if cfg.fused:
                raise
    return torch.optim.AdamW(groups, foreach=True, **kwargs)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    warmup = int(math.ceil(cfg.warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if cfg.scheduler == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if cfg.scheduler == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class StepStats:
    loss: float  # token-weighted mean over the whole step (all workers)
    target_tokens: int  # global
    real_tokens: int  # global, non-padding tokens processed
    padded_tokens: int  # global, including padding
    lr: float
    grad_norm: float
    seconds: float


def _sum_all(values: list[float], all_reduce: Callable[[torch.Tensor], None] | None) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64)
    if all_reduce is not None:
        all_reduce(tensor)
    return tensor.tolist()


class StepRunner:
    """Accumulates a step's micro-batches, scales gradients once, clips, steps optimizer + schedule."""

    def __init__(self, loss_module: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                 max_grad_norm: float | None = None, world_size: int = 1,
                 all_reduce: Callable[[torch.Tensor], None] | None = None, device: str = "cpu",
                 autocast_dtype: torch.dtype | None = None):
        self.loss_module = loss_module
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.max_grad_norm = max_grad_norm
        self.world_size = world_size
        self.all_reduce = all_reduce
        self.device = device
        self.autocast_dtype = autocast_dtype

    def _no_sync(self, last: bool):
        if not last and hasattr(self.loss_module, "no_sync"):
            return self.loss_module.no_sync()
        return contextlib.nullcontext()

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.split(":")[0], dtype=self.autocast_dtype)

    def run(self, micro_batches: list[MicroBatch]) -> StepStats:
        start = time.perf_counter()
        local = [sum(m.target_tokens for m in micro_batches), sum(m.real_tokens for m in micro_batches),
                 sum(m.padded_tokens for m in micro_batches)]
        targets, real, padded = _sum_all(local, self.all_reduce)
        if targets <= 0:
            raise ValueError("an optimizer step without any target token (all labels masked)")
        if not micro_batches:  # every worker must join the gradient all-reduce
            raise ValueError("a worker got no micro-batch for this step")
        scale = self.world_size / targets
        loss_sum = 0.0
        for i, mb in enumerate(micro_batches):
            with self._no_sync(last=i == len(micro_batches) - 1), self._autocast():
                loss = self.loss_module(mb.input_ids.to(self.device), mb.labels.to(self.device))
                (loss * scale).backward()
            loss_sum += float(loss.detach())
        params = [p for p in self.loss_module.parameters() if p.grad is not None]
        if self.max_grad_norm is not None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm))
        else:
            grad_norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        (loss_total,) = _sum_all([loss_sum], self.all_reduce)
        return StepStats(loss_total / targets, int(targets), int(real), int(padded), lr, grad_norm,
                         time.perf_counter() - start)


@torch.no_grad()
def evaluate_loss(loss_module: torch.nn.Module, micro_batches: list[MicroBatch], device: str = "cpu",
                  all_reduce: Callable[[torch.Tensor], None] | None = None) -> dict:
    """Token-weighted validation loss and perplexity over all workers' micro-batches."""
    was_training = loss_module.training
    loss_module.eval()
    total = 0.0
    targets = 0
    for mb in micro_batches:
        total += float(loss_module(mb.input_ids.to(device), mb.labels.to(device)))
        targets += mb.target_tokens
    loss_module.train(was_training)
    total, targets = _sum_all([total, float(targets)], all_reduce)
    loss = total / max(targets, 1)
    return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0)), "val_tokens": int(targets)}
