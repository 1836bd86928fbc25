"""Small aggregates (counts and sums per source, domain, drop reason; a few example rows) in one
streaming pass over a dataset, without a shuffle.

Each block is summarised where it lies (a ``map_batches`` task over only the columns needed), the
small per-block summaries stream to the driver in block order and are folded there as they arrive.
For the low-cardinality keys of the corpus stage that is a few hundred rows whatever the corpus
size, and it avoids a Ray Data ``groupby`` (an all-to-all shuffle; with the 2.60 default strategy
about 200 reduce partitions) for every count of every stage. Counting several things at once also
reads a spilled block back from disk once, not once per count.
"""
from __future__ import annotations

import pickle
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa

_ONE = "__rows"
_FOLD_EVERY = 64  # partial tables folded into the running total at a time


def _summary_batch(batch: pa.Table, fn: Callable[..., Any], kwargs: dict[str, Any]) -> pa.Table:
    return pa.table({"summary": pa.array([pickle.dumps(fn(batch, **kwargs))], pa.binary())})


def block_summaries(ds: Any, fn: Callable[..., Any], columns: Sequence[str] | None = None,
                    **kwargs: Any) -> Iterator[Any]:
    """``fn(block, **kwargs)`` for every block of ``ds`` (projected to ``columns``), in block order.

    ``fn`` runs in the workers and must return something small (it is pickled to the driver).
    """
    if columns is not None:
        ds = ds.select_columns(list(dict.fromkeys(columns)))
    out = ds.map_batches(_summary_batch, fn_kwargs={"fn": fn, "kwargs": kwargs}, batch_format="pyarrow",
                         batch_size=None, zero_copy_batch=True)
    for batch in out.iter_batches(batch_format="pyarrow", batch_size=None):
        for payload in batch.column("summary").to_pylist():
            yield pickle.loads(payload)


def partial_sums(batch: pa.Table, keys: Sequence[str], values: Sequence[str] = ()) -> pa.Table:
    """Per-block aggregate: the keys, `__rows_sum` (row count) and `<value>_sum`."""
    batch = batch.append_column(_ONE, pa.array(np.ones(batch.num_rows, np.int64)))
    return batch.group_by(list(keys), use_threads=False).aggregate([(c, "sum") for c in [_ONE, *values]])


class SumFolder:
    """Folds `partial_sums` tables into a running total (bounded by the number of distinct keys)."""

    def __init__(self, keys: Sequence[str], values: Sequence[str] = ()):
        self.keys, self.values = list(keys), list(values)
        self._pending: list[pa.Table] = []

    def add(self, partial: pa.Table) -> None:
        if partial.num_rows:
            self._pending.append(partial)
        if len(self._pending) >= _FOLD_EVERY:
            self._fold()

    def _fold(self) -> None:
        if len(self._pending) > 1:
            t = pa.concat_tables(self._pending, promote_options="permissive")
            t = t.group_by(self.keys, use_threads=False).aggregate(
                [(f"{c}_sum", "sum") for c in [_ONE, *self.values]])
            self._pending = [t.rename_columns([n[: -len("_sum")] if n.endswith("_sum_sum") else n
                                               for n in t.column_names])]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per distinct key tuple: the keys, ``count`` and ``sum(<value>)`` per value column."""
        self._fold()
        if not self._pending:
            return []
        out = []
        for r in self._pending[0].to_pylist():
            row = {k: r[k] for k in self.keys}
            row["count"] = int(r[f"{_ONE}_sum"] or 0)
            for v in self.values:
                row[f"sum({v})"] = int(r[f"{v}_sum"] or 0)
            out.append(row)
        return out


def sum_by(ds: Any, keys: Sequence[str], values: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One dict per distinct key tuple: the keys, ``count`` (rows) and ``sum(<value>)`` per value column."""
    folder = SumFolder(keys, values)
    for partial in block_summaries(ds, partial_sums, columns=[*keys, *values], keys=list(keys), values=list(values)):
        folder.add(partial)
    return folder.rows()


def by_key(rows: list[dict[str, Any]], key: str, field: str = "count") -> dict[str, int]:
    """``{str(key value): total of field}`` over `sum_by` rows, sorted by key."""
    out: dict[str, int] = {}
    for r in rows:
        out[str(r[key])] = out.get(str(r[key]), 0) + r[field]
    return dict(sorted(out.items()))


def count_by(ds: Any, column: str) -> dict[str, int]:
    """Rows per value of ``column`` (keys as strings, sorted)."""
    return by_key(sum_by(ds, [column]), column)


def total_by(ds: Any, column: str, value: str) -> dict[str, int]:
    """Sum of ``value`` per value of ``column`` (keys as strings, sorted)."""
    return by_key(sum_by(ds, [column], [value]), column, f"sum({value})")
