"""Where the training loop gets data, reports metrics and finds its last checkpoint.

`RaySession` is Ray Train (dataset shards, `ray.train.report`, `get_checkpoint`, torch.distributed);
`LocalSession` is the same contract in one process without Ray (a GPU box, a debugger, unit tests).
"""
from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import torch


class RaySession:
    def __init__(self):
        import ray.train

        self._train = ray.train
        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.local_rank = ctx.get_local_rank()
        self.distributed = self.world_size > 1 and torch.distributed.is_initialized()

    def batches(self, name: str, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        shard = self._train.get_dataset_shard(name)
        if shard is None:
            raise KeyError(f"no dataset {name!r} was given to the trainer")
        return shard.iter_batches(batch_size=batch_size, batch_format="numpy", drop_last=False)

    def has_dataset(self, name: str) -> bool:
        try:
            return self._train.get_dataset_shard(name) is not None
        except (KeyError, ValueError):
            return False

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[str | None]:
        checkpoint = self._train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as directory:
            yield directory

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        from ray.train import Checkpoint

        checkpoint = Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        self._train.report(metrics, checkpoint=checkpoint)

    def all_reduce(self, tensor: torch.Tensor) -> None:
        if self.distributed:
            work = tensor.to(torch.float64) if tensor.dtype != torch.float64 else tensor
            torch.distributed.all_reduce(work)
            tensor.copy_(work)

    def broadcast_object(self, value):
        if not self.distributed:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


class LocalSession:
    """One process, no Ray: datasets are Arrow tables, checkpoints are kept under `checkpoint_root`."""

    def __init__(self, datasets: dict[str, pa.Table], checkpoint_root: str | Path):
        self.rank, self.world_size, self.local_rank, self.distributed = 0, 1, 0, False
        self.datasets = datasets
        self.root = Path(checkpoint_root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.reports: list[dict] = []
        self.checkpoints: list[tuple[Path, dict]] = []

    def batches(self, name: str, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        table = self.datasets[name]
        for start in range(0, table.num_rows, batch_size):
            chunk = table.slice(start, batch_size)
            out = {}
            for col in chunk.column_names:
                column = chunk.column(col).combine_chunks()
                if pa.types.is_fixed_size_list(column.type):
                    out[col] = column.flatten().to_numpy().reshape(len(column), column.type.list_size)
                elif pa.types.is_list(column.type):
                    out[col] = np.array([np.asarray(x) for x in column.to_pylist()] + [None], dtype=object)[:-1]
                else:
                    out[col] = column.to_numpy(zero_copy_only=False)
            yield out

    def has_dataset(self, name: str) -> bool:
        return name in self.datasets

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[str | None]:
        yield str(self.checkpoints[-1][0]) if self.checkpoints else None

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint_dir:
            target = Path(tempfile.mkdtemp(prefix="checkpoint_", dir=self.root))
            shutil.copytree(checkpoint_dir, target, dirs_exist_ok=True)
            self.checkpoints.append((target, dict(metrics)))

    def all_reduce(self, tensor: torch.Tensor) -> None:
        return None

    def broadcast_object(self, value):
        return value
