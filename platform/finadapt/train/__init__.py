"""Two training stages on Ray Train: further pre-training (stage 1) and instruction tuning (stage 2).

Imports are lazy so the plain-torch parts (`train.step`, `train.batching`, `train.flops`) load on a
machine without Ray or pydantic (a bare GPU box).
"""
from __future__ import annotations

__all__ = ["PretrainConfig", "SftConfig", "TrainConfig", "run_training"]


def __getattr__(name: str):
    if name in ("PretrainConfig", "SftConfig", "TrainConfig"):
        from finadapt.train import config

        return getattr(config, name)
    if name == "run_training":
        from finadapt.train.run import run_training

        return run_training
    raise AttributeError(name)
