"""Corpus-level checks of parsed synthetic samples: near-copies of real training examples,
duplicates among the synthetic ones, overlap with the evaluation splits.

Similarity is rapidfuzz `fuzz.ratio` (0-100) on lower-cased, whitespace-normalized text; the
n-gram test against the evaluation splits is the corpus stage's decontamination index.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from rapidfuzz import fuzz, process

from finadapt.data.decontaminate import EvalNgramIndex
from finadapt.tasks import Sample

NEAR_COPY_OF_REAL = "near_copy_of_real"
DUPLICATE_SYNTHETIC = "duplicate_synthetic"
CONTAMINATED = "overlaps_eval_split"
VERIFIER_DISAGREES = "verifier_disagrees"


def norm(text: str) -> str:
    return " ".join(text.lower().split())


@dataclass
class Reference:
    """Texts a synthetic sample must not copy: real training texts (id, text) and eval texts."""

    real: dict[str, list[tuple[str, str]]]          # task -> [(id, normalized text)]
    eval_texts: list[tuple[str, str, str]]           # (task, id, normalized text)
    eval_index: EvalNgramIndex | None = None
    _real_lists: dict[str, list[str]] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, real: dict[str, Sequence[Sample]], eval_texts: Sequence[tuple[str, str, str]],
              eval_index: EvalNgramIndex | None) -> "Reference":
        unique: dict[str, list[tuple[str, str]]] = {}
        for task, samples in real.items():
            seen: dict[str, str] = {}
            for s in samples:
                seen.setdefault(norm(s.text), s.id)
            unique[task] = [(sid, text) for text, sid in seen.items()]
        evals = list({norm(t): (task, i, norm(t)) for task, i, t in eval_texts}.values())
        return cls(unique, evals, eval_index)

    def real_texts(self, task: str) -> list[str]:
        if task not in self._real_lists:
            self._real_lists[task] = [t for _, t in self.real.get(task, [])]
        return self._real_lists[task]


@dataclass
class Verdict:
    sample: Sample
    reason: str = ""          # "" = accepted
    detail: str = ""
    nearest_real_id: str = ""
    nearest_real_similarity: float = 0.0


def nearest(queries: list[str], choices: list[str], workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(best score, index of the best choice) for each query (score 0, index -1 with no choices)."""
    if not queries or not choices:
        return np.zeros(len(queries)), np.full(len(queries), -1)
    scores = process.cdist(queries, choices, scorer=fuzz.ratio, dtype=np.uint8, workers=workers)
    best = scores.argmax(axis=1)
    return scores[np.arange(len(queries)), best].astype(float), best


def check_samples(samples: list[Sample], ref: Reference, near_copy_ratio: float = 90.0,
                  duplicate_ratio: float = 90.0, eval_ratio: float = 90.0, workers: int = 1) -> list[Verdict]:
    """One verdict per sample, in order. Earlier samples win duplicates (generation order is seeded)."""
    verdicts = [Verdict(s) for s in samples]
    by_task: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_task.setdefault(s.task, []).append(i)
    eval_norm = [t for _, _, t in ref.eval_texts]
    for task, idx in by_task.items():
        texts = [norm(samples[i].text) for i in idx]
        real = ref.real.get(task, [])
        best, where = nearest(texts, ref.real_texts(task), workers)
        eval_best, eval_where = nearest(texts, eval_norm, workers)
        ngram_hits = (ref.eval_index.batch_matches(texts, 1) if ref.eval_index is not None
                      else [[] for _ in texts])
        kept: list[str] = []
        for j, i in enumerate(idx):
            v = verdicts[i]
            if where[j] >= 0:
                v.nearest_real_id, v.nearest_real_similarity = real[where[j]][0], float(best[j])
            if ngram_hits[j]:
                hit = ngram_hits[j][0]
                v.reason, v.detail = CONTAMINATED, f"shares '{hit['ngram']}' with {hit['task']} {hit['eval_id']}"
            elif eval_where[j] >= 0 and eval_best[j] >= eval_ratio:
                e_task, e_id, _ = ref.eval_texts[eval_where[j]]
                v.reason, v.detail = CONTAMINATED, f"similarity {eval_best[j]:.0f} to {e_task} {e_id}"
            elif v.nearest_real_similarity >= near_copy_ratio:
                v.reason = NEAR_COPY_OF_REAL
                v.detail = f"similarity {v.nearest_real_similarity:.0f} to {v.nearest_real_id}"
            else:
                dup = process.extractOne(texts[j], kept, scorer=fuzz.ratio, score_cutoff=duplicate_ratio) if kept else None
                if dup is not None:
                    v.reason = DUPLICATE_SYNTHETIC
                    v.detail = f"similarity {dup[1]:.0f} to an earlier synthetic sample"
                else:
                    kept.append(texts[j])
    return verdicts
