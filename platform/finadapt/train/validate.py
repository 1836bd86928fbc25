"""Stage-2 validation: the evaluation harness on the validation splits (never test), on the live model.

The score that picks the best checkpoint is the mean primary FLARE metric over the validation tasks
(choice mode for classification, generation for NER), the paper's "best checkpoint" criterion.
"""
from __future__ import annotations

import math

import torch

from finadapt.config import EvalConfig, EvalRaySection, GenerationConfig, ModelConfig
from finadapt.evaluate.predictor import FlarePredictor
from finadapt.evaluate.runner import run_evaluation
from finadapt.models import LoadedModel
from finadapt.train.config import SftConfig


def validation_wrapper(cfg: SftConfig) -> str:
    if cfg.validation.wrapper is not None:
        return cfg.validation.wrapper
    return "chat" if cfg.data.template == "chat" else "raw"


def eval_config(cfg: SftConfig) -> EvalConfig:
    tasks = list(cfg.validation.tasks)
    return EvalConfig(
        model=ModelConfig(spec="training"), tasks=tasks, split="valid", limit=cfg.validation.limit,
        task_limits={k: v for k, v in cfg.validation.task_limits.items() if k in tasks},
        seed=cfg.seed, modes=["choice"], wrapper=validation_wrapper(cfg), max_length=cfg.data.max_length,
        generation=GenerationConfig(max_new_tokens_ner=96), bootstrap=0, ray=EvalRaySection(enabled=False),
    )


@torch.no_grad()
def flare_validation(model: torch.nn.Module, tokenizer, cfg: SftConfig) -> dict:
    """{"val_score": mean primary metric, "val_<task>": per task} for the current weights."""
    ecfg = eval_config(cfg)
    was_training = model.training
    model.eval()
    try:
        predictor = FlarePredictor.from_loaded(
            LoadedModel(model, tokenizer, "training", "training", "live"), wrapper=ecfg.wrapper,
            modes=("choice",), max_length=ecfg.max_length, token_budget=ecfg.token_budget,
            max_new_tokens={"classification": 8, "headlines": 8, "ner": ecfg.generation.max_new_tokens_ner})
        run = run_evaluation(ecfg, predictor)
    finally:
        model.train(was_training)
    scores = {f"val_{e['task']}": float(e["score"]) for e in run.scores if e["mode"] == "choice"}
    finite = [v for v in scores.values() if not math.isnan(v)]
    return {"val_score": sum(finite) / len(finite) if finite else 0.0, **scores,
            "val_seconds": run.seconds["total"]}
