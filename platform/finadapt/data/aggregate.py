"""Small group-by aggregates (counts and sums per source, domain, drop reason) without a shuffle.

Each block is aggregated where it lies (pyarrow ``group_by`` in a ``map_batches`` task over only the
columns needed), and the partial results, one row per block and distinct key, are combined on the
driver. For the low-cardinality keys of the corpus stage that is a few hundred rows whatever the
corpus size, and it avoids a Ray Data ``groupby`` (an all-to-all shuffle that moves whole blocks
and, with the 2.60 default strategy, starts aggregator actors) for every count of every stage.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

_ONE = "__rows"


def _partial(batch: pa.Table, keys: list[str], values: list[str]) -> pa.Table:
    """Per-block aggregate: the keys, `__rows_sum` and `<value>_sum`."""
    batch = batch.append_column(_ONE, pa.array(np.ones(batch.num_rows, np.int64)))
    return batch.group_by(keys, use_threads=False).aggregate([(c, "sum") for c in [_ONE, *values]])


def sum_by(ds: Any, keys: Sequence[str], values: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One dict per distinct key tuple: the keys, ``count`` (rows) and ``sum(<value>)`` per value column."""
    import ray

    keys, values = list(keys), list(values)
    partials = ds.select_columns(list(dict.fromkeys(keys + values))).map_batches(
        _partial, fn_kwargs={"keys": keys, "values": values}, batch_format="pyarrow", batch_size=None,
        zero_copy_batch=True)
    tables = [t for t in ray.get(partials.to_arrow_refs()) if t.num_rows]
    if not tables:
        return []
    total = pa.concat_tables(tables, promote_options="permissive").group_by(keys, use_threads=False).aggregate(
        [(f"{c}_sum", "sum") for c in [_ONE, *values]])
    rows = []
    for r in total.to_pylist():
        row = {k: r[k] for k in keys}
        row["count"] = int(r[f"{_ONE}_sum_sum"] or 0)
        for v in values:
            row[f"sum({v})"] = int(r[f"{v}_sum_sum"] or 0)
        rows.append(row)
    return rows


def count_by(ds: Any, column: str) -> dict[str, int]:
    """Rows per value of ``column`` (keys as strings, sorted)."""
    rows = sum_by(ds, [column])
    return {str(r[column]): r["count"] for r in sorted(rows, key=lambda r: str(r[column]))}


def total_by(ds: Any, column: str, value: str) -> dict[str, int]:
    """Sum of ``value`` per value of ``column`` (keys as strings, sorted)."""
    rows = sum_by(ds, [column], [value])
    return {str(r[column]): r[f"sum({value})"] for r in sorted(rows, key=lambda r: str(r[column]))}
