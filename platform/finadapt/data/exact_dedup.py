"""Exact dedup: one document per distinct (normalized) text, decided in parallel by Ray.

Rows are hash-partitioned by a blake2b digest of ``text`` (``groupby("hash").map_groups``), so all
copies of a text meet in one group on one worker, wherever they came from; the survivor is the
copy with the smallest id (lexicographic), which does not depend on partitioning or input order.
Run it after normalization: "exact" then means "equal after normalize_text".
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray.data
from pydantic import BaseModel, ConfigDict, Field
from ray.data.expressions import col

_EXTRA = ["hash", "dup_removed", "dup_ids", "dup_sources"]


class ExactDedupConfig(BaseModel):
    """How exact dedup partitions the work and how much it reports."""

    model_config = ConfigDict(extra="forbid")

    num_partitions: int | None = Field(None, ge=1, description="hash partitions of the shuffle (None: Ray's default)")
    max_examples: int = Field(5, ge=0, description="duplicate groups reported, largest first")
    max_ids_per_example: int = Field(10, ge=1, description="removed ids listed per reported group")


@dataclass
class ExactDedupResult:
    """The deduplicated dataset (materialized in the object store), what was removed, examples."""

    dataset: ray.data.Dataset
    removed: int
    examples: list[dict[str, Any]]


def text_hash(text: str) -> str:
    """128-bit blake2b hex digest of the UTF-8 text (collisions: negligible at any corpus size)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def add_hash(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Batch UDF: add the ``hash`` column."""
    return {**batch, "hash": np.array([text_hash(t) for t in batch["text"]], dtype=object)}


def keep_smallest_id(group: pa.Table, max_ids: int = 10) -> pa.Table:
    """map_groups UDF: the smallest-id row of one hash group, plus who it stands for."""
    order = pc.sort_indices(group, sort_keys=[("id", "ascending")])
    group = group.take(order)
    removed_ids = group.column("id").to_pylist()[1:]
    removed_sources = group.column("source").to_pylist()[1:]
    keep = group.slice(0, 1)
    keep = keep.append_column("dup_removed", pa.array([len(removed_ids)], pa.int64()))
    keep = keep.append_column("dup_ids", pa.array([removed_ids[:max_ids]], pa.list_(pa.string())))
    return keep.append_column("dup_sources", pa.array([removed_sources[:max_ids]], pa.list_(pa.string())))


def exact_dedup(ds: ray.data.Dataset, config: ExactDedupConfig | None = None) -> ExactDedupResult:
    """Keep one row per distinct text; count removals and collect the largest duplicate groups.

    The shuffle is an all-to-all barrier anyway, so its output is materialized (object store,
    not the driver) and the counts and examples are read from it without recomputing.
    """
    config = config or ExactDedupConfig()
    marked = (
        ds.map_batches(add_hash, batch_format="numpy")
        .groupby("hash", num_partitions=config.num_partitions)
        .map_groups(keep_smallest_id, batch_format="pyarrow", fn_kwargs={"max_ids": config.max_ids_per_example})
        .materialize()
    )
    removed = int(marked.sum("dup_removed") or 0) if marked.count() else 0
    examples: list[dict[str, Any]] = []
    if removed and config.max_examples:
        rows = (
            marked.filter(expr=col("dup_removed") > 0)
            .select_columns(["hash", "id", "source", "dup_removed", "dup_ids", "dup_sources"])
            .sort(["dup_removed", "id"], descending=[True, False])
            .take(config.max_examples)
        )
        examples = [
            {
                "hash": r["hash"],
                "kept": {"id": r["id"], "source": r["source"]},
                "removed_count": int(r["dup_removed"]),
                "removed": [{"id": i, "source": s} for i, s in zip(list(r["dup_ids"]), list(r["dup_sources"]))],
            }
            for r in rows
        ]
    return ExactDedupResult(dataset=marked.drop_columns(_EXTRA), removed=removed, examples=examples)
