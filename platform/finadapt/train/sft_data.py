"""Instruction data for stage 2: FLARE samples -> (token ids, prompt length) rows.

The prompt is rendered exactly as the evaluation harness shows it (chat template, or the raw FLARE
query), and the response is tokenized separately, so the loss mask falls on a token boundary and
the answer tokens are the ones the choice scorer reads at the answer position.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from finadapt.errors import InputError
from finadapt.evaluate.wrappers import answer_separator, render_prompt
from finadapt.tasks import load_samples
from finadapt.tasks.base import Sample
from finadapt.tasks.flare_jsonl import read_samples
from finadapt.tasks.mixing import mix_samples
from finadapt.tasks.selection import select_rows
from finadapt.train.batching import encode_sft
from finadapt.train.config import SftData

log = logging.getLogger(__name__)


def prompt_and_response(sample: Sample, template: str, tokenizer) -> tuple[str, str]:
    """The two texts of one training example; the response ends with the end-of-turn / EOS token."""
    if template == "chat":
        prompt = render_prompt(sample.query, "chat", tokenizer)
        full = tokenizer.apply_chat_template(
            [{"role": "user", "content": sample.query}, {"role": "assistant", "content": sample.answer}],
            tokenize=False)
        if not full.startswith(prompt):
            raise ValueError("the chat template renders the user turn differently with and without the "
                             "assistant reply; use data.template=flare for this model")
        response = full[len(prompt):]
        if tokenizer.eos_token and tokenizer.eos_token not in response:
            response += tokenizer.eos_token
        return prompt, response
    if template == "flare":
        return sample.query, answer_separator(sample.query) + sample.answer + (tokenizer.eos_token or "")
    raise ValueError(f"unknown SFT template {template!r}")


@dataclass
class EncodedSamples:
    ids: list[np.ndarray] = field(default_factory=list)
    prompt_lengths: list[int] = field(default_factory=list)
    sample_ids: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    truncated: int = 0

    def to_arrow(self):
        import pyarrow as pa

        return pa.table({"input_ids": pa.array([x.tolist() for x in self.ids], pa.list_(pa.int32())),
                         "prompt_length": pa.array(self.prompt_lengths, pa.int32()),
                         "sample_id": pa.array(self.sample_ids), "task": pa.array(self.tasks)})

    def stats(self) -> dict:
        lengths = np.asarray([len(x) for x in self.ids])
        responses = lengths - np.asarray(self.prompt_lengths)
        per_task: dict[str, int] = {}
        for t in self.tasks:
            per_task[t] = per_task.get(t, 0) + 1
        return {"samples": len(self.ids), "per_task": per_task, "tokens": int(lengths.sum()),
                "response_tokens": int(responses.sum()), "mean_length": float(lengths.mean()) if len(lengths) else 0.0,
                "max_length": int(lengths.max()) if len(lengths) else 0, "truncated_prompts": self.truncated}


def encode_samples(samples: list[Sample], tokenizer, template: str, max_length: int) -> EncodedSamples:
    out = EncodedSamples()
    pairs = [prompt_and_response(s, template, tokenizer) for s in samples]
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=False)["input_ids"]
    responses = tokenizer([r for _, r in pairs], add_special_tokens=False)["input_ids"]
    for sample, p_ids, r_ids in zip(samples, prompts, responses):
        ids, prompt_len, truncated = encode_sft(p_ids, r_ids, max_length)
        out.ids.append(np.asarray(ids, dtype=np.int32))
        out.prompt_lengths.append(prompt_len)
        out.sample_ids.append(sample.id)
        out.tasks.append(sample.task)
        out.truncated += truncated
    return out


def training_samples(cfg: SftData, seed: int = 0) -> list[Sample]:
    """Training splits of the configured tasks (seeded subsets if limited) plus any extra JSONL."""
    samples: list[Sample] = []
    for task in cfg.tasks:
        rows = select_rows(task, load_samples(task, "train"), cfg.limit_per_task, seed)
        if not rows:
            raise InputError(f"task {task!r} has no training samples")
        samples.extend(rows)
    if cfg.synthetic_jsonl:
        synthetic = [s for uri in cfg.synthetic_jsonl for s in read_samples(uri)]
        mixed = mix_samples(samples, synthetic, cfg.synthetic_ratio, seed, cfg.synthetic_on_short)
        for task, counts in mixed.per_task.items():
            log.info("%s: %d real + %d synthetic (ratio %.3f)", task, counts["real"], counts["synthetic"],
                     counts["achieved_ratio"])
        samples = mixed.samples
    for uri in cfg.extra_jsonl:
        extra = read_samples(uri)
        log.info("added %d samples from %s", len(extra), uri)
        samples.extend(extra)
    return samples
