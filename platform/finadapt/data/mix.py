"""Mix sources/domains to target token ratios, reproducibly and without a driver-side collect.

Each document gets a number of copies from its group's sampling rate: floor(rate) copies plus one
more with probability frac(rate), decided by a seeded hash of its id (so the same run config gives
the same mix on any number of workers). Rates < 1 down-sample, rates > 1 up-sample (if allowed).
"""
from __future__ import annotations

import hashlib

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator


class MixConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: str = Field("domain", description="column the ratios refer to: domain or source")
    ratios: dict[str, float] = Field({"financial": 0.7, "general": 0.3},
                                     description="target share of tokens per group (normalized to sum 1)")
    total_tokens: int | None = Field(None, ge=1, description="target size; None = largest mix without up-sampling")
    allow_upsample: bool = Field(False, description="repeat documents when a group has too few tokens")
    seed: int = 0

    @field_validator("ratios")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        if not value or any(v < 0 for v in value.values()) or sum(value.values()) <= 0:
            raise ValueError("ratios need at least one positive share and no negative ones")
        return value


def sampling_rates(available: dict[str, int], cfg: MixConfig) -> dict[str, float]:
    """Per-group rate so that group tokens / total tokens = the target ratio."""
    missing = [g for g, r in cfg.ratios.items() if r > 0 and available.get(g, 0) == 0]
    if missing:
        raise ValueError(f"mix asks for groups with no tokens left: {missing} (available: {available})")
    total_share = sum(cfg.ratios.values())
    shares = {g: r / total_share for g, r in cfg.ratios.items()}
    total = cfg.total_tokens
    if total is None:  # the largest total that no group needs to up-sample for
        total = min(available[g] / s for g, s in shares.items() if s > 0)
    rates = {g: (s * total / available[g] if s > 0 else 0.0) for g, s in shares.items()}
    over = {g: r for g, r in rates.items() if r > 1.0 + 1e-9}
    if over and not cfg.allow_upsample:
        raise ValueError(f"total_tokens={cfg.total_tokens} needs up-sampling of {over}; set allow_upsample")
    return rates


def _unit_hash(seed: int, doc_id: str) -> float:
    digest = hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def copies_for(batch: dict[str, np.ndarray], rates: dict[str, float], by: str, seed: int) -> np.ndarray:
    out = np.zeros(len(batch["id"]), dtype=np.int64)
    for i, (doc_id, group) in enumerate(zip(batch["id"], batch[by])):
        rate = rates.get(str(group), 0.0)
        whole = int(np.floor(rate))
        out[i] = whole + (1 if _unit_hash(seed, str(doc_id)) < rate - whole else 0)
    return out


def apply_mix(batch: dict[str, np.ndarray], rates: dict[str, float], by: str, seed: int) -> dict[str, np.ndarray]:
    """Repeat (or drop) each row by its copy count; repeated copies get `#k` id suffixes."""
    copies = copies_for(batch, rates, by, seed)
    index = np.repeat(np.arange(len(copies)), copies)
    out = {k: np.asarray(v)[index] for k, v in batch.items()}
    if len(index):
        rank = np.concatenate([np.arange(c) for c in copies if c > 0])
        out["id"] = np.asarray([f"{i}#{r}" if r else str(i) for i, r in zip(out["id"], rank)], dtype=object)
    return out
