"""Mix sources/domains to target token ratios, reproducibly and without a driver-side collect.

Each document gets a number of copies from its group's sampling rate: floor(rate) copies plus one
more if its seeded hash bucket is below the group's cutoff. The cutoff comes from a per-group token
histogram over hash buckets (per-block sums folded on the driver: at most `buckets` rows per group),
so the kept fraction of *tokens* — not of documents — hits frac(rate) to within one bucket, however
unequal the document lengths. Same seed, same mix, on any number of workers.
"""
from __future__ import annotations

import hashlib

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from finadapt.config import ConfigError


class MixConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: str = Field("domain", description="column the ratios refer to: domain or source")
    ratios: dict[str, float] = Field({"financial": 0.7, "general": 0.3},
                                     description="target share of tokens per group (normalized to sum 1)")
    total_tokens: int | None = Field(None, ge=1, description="target size; None = largest mix without up-sampling")
    allow_upsample: bool = Field(False, description="repeat documents when a group has too few tokens")
    seed: int = 0
    buckets: int = Field(4096, ge=16, description="hash buckets of the token histogram (precision of the mix)")

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
        raise ConfigError(f"mix.ratios asks for groups with no tokens left: {missing} (available: {available})")
    total_share = sum(cfg.ratios.values())
    shares = {g: r / total_share for g, r in cfg.ratios.items()}
    total = cfg.total_tokens
    if total is None:  # the largest total that no group needs to up-sample for
        total = min(available[g] / s for g, s in shares.items() if s > 0)
    rates = {g: (s * total / available[g] if s > 0 else 0.0) for g, s in shares.items()}
    over = {g: r for g, r in rates.items() if r > 1.0 + 1e-9}
    if over and not cfg.allow_upsample:
        raise ConfigError(f"mix.total_tokens={cfg.total_tokens} needs up-sampling of {over}; set mix.allow_upsample")
    return rates


def _unit_hash(seed: int, doc_id: str) -> float:
    digest = hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def add_bucket(batch: dict[str, np.ndarray], seed: int, buckets: int) -> dict[str, np.ndarray]:
    out = dict(batch)
    out["mix_bucket"] = np.asarray([int(_unit_hash(seed, str(i)) * buckets) for i in batch["id"]], dtype=np.int64)
    return out


def bucket_cutoffs(histogram: list[dict], rates: dict[str, float], by: str) -> dict[str, int]:
    """Per group, the bucket index below which documents get their extra copy, chosen so that the
    tokens of those buckets are closest to frac(rate) x the group's tokens."""
    cutoffs = {}
    for group, rate in rates.items():
        rows = sorted((int(r["mix_bucket"]), int(r["sum(n_tokens)"])) for r in histogram if str(r[by]) == group)
        total = sum(t for _, t in rows)
        target = (rate - np.floor(rate)) * total
        best, best_err, cumulative = 0, target, 0
        for bucket, tokens in rows:
            cumulative += tokens
            if abs(cumulative - target) < best_err:
                best, best_err = bucket + 1, abs(cumulative - target)
        cutoffs[group] = best
    return cutoffs


def copies_for(batch: dict[str, np.ndarray], rates: dict[str, float], cutoffs: dict[str, int], by: str) -> np.ndarray:
    out = np.zeros(len(batch["id"]), dtype=np.int64)
    for i, (bucket, group) in enumerate(zip(batch["mix_bucket"], batch[by])):
        rate = rates.get(str(group), 0.0)
        out[i] = int(np.floor(rate)) + (1 if bucket < cutoffs.get(str(group), 0) else 0)
    return out


def apply_mix(batch: dict[str, np.ndarray], rates: dict[str, float], cutoffs: dict[str, int],
              by: str) -> dict[str, np.ndarray]:
    """Repeat (or drop) each row by its copy count; repeated copies get `#k` id suffixes."""
    copies = copies_for(batch, rates, cutoffs, by)
    index = np.repeat(np.arange(len(copies)), copies)
    out = {k: np.asarray(v)[index] for k, v in batch.items()}
    if len(index):
        rank = np.concatenate([np.arange(c) for c in copies if c > 0])
        out["id"] = np.asarray([f"{i}#{r}" if r else str(i) for i, r in zip(out["id"], rank)], dtype=object)
    return out


def bucketed_dataset(ds, cfg: MixConfig):
    """Lazily add each document's seeded hash bucket (`mix_bucket`); materialize it before `mix_bucketed`."""
    return ds.map_batches(add_bucket, fn_kwargs={"seed": cfg.seed, "buckets": cfg.buckets}, batch_format="numpy")


def mix_bucketed(bucketed, cfg: MixConfig, histogram: list[dict] | None = None):
    """(mixed dataset, sampling rates, bucket cutoffs) for a bucketed, tokenized dataset.

    `histogram`: rows {by, mix_bucket, sum(n_tokens)}; computed here (per-block sums of the three
    columns, folded on the driver: at most groups x buckets rows) when not given. The mixed dataset
    is lazy over `bucketed`.
    """
    if histogram is None:
        from finadapt.data.aggregate import sum_by

        histogram = sum_by(bucketed, [cfg.by, "mix_bucket"], ["n_tokens"])
    available: dict[str, int] = {}
    for row in histogram:
        available[str(row[cfg.by])] = available.get(str(row[cfg.by]), 0) + int(row["sum(n_tokens)"])
    rates = sampling_rates(available, cfg)
    cutoffs = bucket_cutoffs(histogram, rates, cfg.by)
    mixed = bucketed.map_batches(apply_mix, fn_kwargs={"rates": rates, "cutoffs": cutoffs, "by": cfg.by},
                                 batch_format="numpy").drop_columns(["mix_bucket"])
    return mixed, rates, cutoffs


def mix_dataset(ds, cfg: MixConfig):
    """(mixed dataset, sampling rates, bucket cutoffs) for a tokenized dataset with `n_tokens`."""
    return mix_bucketed(bucketed_dataset(ds, cfg).materialize(), cfg)


def add_shuffle_key(batch: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    out = dict(batch)
    out["_shuffle_key"] = np.asarray(
        [int.from_bytes(hashlib.blake2b(f"shuffle:{seed}:{i}".encode(), digest_size=8).digest(), "little") >> 1
         for i in batch["id"]], dtype=np.int64)
    return out


def seeded_shuffle(ds, seed: int, num_partitions: int):
    """Rows in a seeded random order (ids must be unique).

    Each row's key is a seeded hash of its id; a hash repartition on the key with `sort=True` sends
    every row to a random partition and orders each partition by the key, so the concatenation is a
    uniformly random permutation. Which rows form a partition and their order inside it depend only
    on the seed and the ids, not on blocks or workers; the partitions themselves come out in the
    order they finish (as `random_shuffle`'s blocks do unless the context preserves order). Unlike `random_shuffle` (every input block split into one piece
    per output block: with many small blocks those pieces fall under Ray's inline-object size and
    pile up in the driver's memory), its shards go through the strategy of the dataset's context,
    the disk-based hash shuffle in the corpus pipeline.
    """
    keyed = ds.map_batches(add_shuffle_key, fn_kwargs={"seed": seed}, batch_format="numpy")
    return keyed.repartition(max(1, num_partitions), keys=["_shuffle_key"], sort=True).drop_columns(["_shuffle_key"])
