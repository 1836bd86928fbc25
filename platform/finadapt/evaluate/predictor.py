"""The model-holding unit of work: one batch of FLARE rows in, raw model outputs out.

Used as a Ray Data actor class (`map_batches`) and called directly in-process (benchmarks,
GPU checks without Ray). Parsing and metrics stay on the driver: actors do model work only.
"""
from __future__ import annotations

import logging
import time
from collections import Counter

import pandas as pd

from finadapt import telemetry
from finadapt.evaluate.scorer import ChoiceScorer, Generator
from finadapt.models import LoadedModel, load_model

log = logging.getLogger(__name__)

KIND_OF_TASK_COLUMN = "kind"


class FlarePredictor:
    """Loads the model once; `__call__` scores a pandas batch (columns: Sample fields + `kind`)."""

    def __init__(self, model_spec: str, dtype: str = "auto", device: str | None = None,
                 trust_remote_code: bool = False, wrapper: str = "chat", modes: tuple[str, ...] = ("choice",),
                 max_length: int = 1024, token_budget: int = 4096,
                 max_new_tokens: dict[str, int] | None = None, max_batch: int = 32,
                 telemetry_context: dict[str, str] | None = None):
        telemetry.bind(**(telemetry_context or {}))  # the driver's pipeline/trial tags, in this actor
        self._setup(load_model(model_spec, dtype=dtype, device=device, trust_remote_code=trust_remote_code),
                    wrapper, modes, max_length, token_budget, max_new_tokens, max_batch)

    @classmethod
    def from_loaded(cls, loaded: LoadedModel, wrapper: str = "chat", modes: tuple[str, ...] = ("choice",),
                    max_length: int = 1024, token_budget: int = 4096,
                    max_new_tokens: dict[str, int] | None = None, max_batch: int = 32) -> "FlarePredictor":
        """Score a model already in memory (validation inside a training loop)."""
        predictor = cls.__new__(cls)
        predictor._setup(loaded, wrapper, modes, max_length, token_budget, max_new_tokens, max_batch)
        return predictor

    def _setup(self, loaded: LoadedModel, wrapper: str, modes: tuple[str, ...], max_length: int,
               token_budget: int, max_new_tokens: dict[str, int] | None, max_batch: int) -> None:
        self.loaded = loaded
        model, tok = self.loaded.model, self.loaded.tokenizer
        self.modes = tuple(modes)
        self.scorer = ChoiceScorer(model, tok, wrapper, max_length, token_budget)
        self.generator = Generator(model, tok, wrapper, max_length, token_budget, max_batch)
        self.max_new_tokens = max_new_tokens or {"classification": 256, "headlines": 256, "ner": 256}

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rows = batch.to_dict("records")
        out = [dict(id=r["id"], task=r["task"], choice_pred=-1, choice_logprobs=[], generation="",
                    prompt_tokens=0, generated_tokens=0, truncated=False, choice_seconds=0.0,
                    generate_seconds=0.0) for r in rows]
        wants_generation = bool({"compat", "robust"} & set(self.modes))
        for kind in sorted({r[KIND_OF_TASK_COLUMN] for r in rows}):
            idx = [i for i, r in enumerate(rows) if r[KIND_OF_TASK_COLUMN] == kind]
            subset = [rows[i] for i in idx]
            wants_choice = "choice" in self.modes and kind != "ner"
            generate = wants_generation or kind == "ner"
            # One prefill serves both modes when every label is a single token.
            shared = wants_choice and generate and self.scorer.single_token(subset)
            if wants_choice and not shared:
                start = time.perf_counter()
                scored = self.scorer.score(subset)
                per_row = (time.perf_counter() - start) / len(idx)
                for i, res in zip(idx, scored):
                    out[i].update(choice_pred=res["pred"], choice_logprobs=res["choice_logprobs"],
                                  prompt_tokens=res["prompt_tokens"], truncated=res["truncated"],
                                  choice_seconds=per_row)
            if generate:
                start = time.perf_counter()
                generated = self.generator.generate(subset, self.max_new_tokens[kind], keep_first_logprobs=shared)
                per_row = (time.perf_counter() - start) / len(idx)
                for i, res in zip(idx, generated):
                    out[i].update(generation=res["generation"], generated_tokens=res["generated_tokens"],
                                  prompt_tokens=res["prompt_tokens"],
                                  truncated=bool(out[i]["truncated"] or res["truncated"]),
                                  generate_seconds=per_row)
                if shared:
                    scored = self.scorer.from_first_logprobs(subset, [g["first_logprobs"] for g in generated])
                    for i, res in zip(idx, scored):
                        out[i].update(choice_pred=res["pred"], choice_logprobs=res["choice_logprobs"])
        for task, n in Counter(r["task"] for r in rows).items():
            telemetry.record("finadapt_eval_rows_scored", n, task=task)
        return pd.DataFrame(out)

