"""Where the training loop gets data, reports metrics and finds its last checkpoint.

`RaySession` is Ray Train (dataset shards, `ray.train.report`, `get_checkpoint`, torch.distributed);
`LocalSession` is the same contract in one process without Ray (a GPU box, a debugger, unit tests).
"""
from __future__ import annotations

import contextlib
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import torch

from finadapt.train.identity import META_FILE


class RaySession:
    def __init__(self, resume_from: str | None = None):
        """`resume_from`: the driver's latest checkpoint of this run, used when Ray has none of its own
        (the run's earlier checkpoints were written by the `--no-ray` path)."""
        import ray.train

        self.resume_from = resume_from

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
        if checkpoint is None and self.resume_from:
            from finadapt import storage

            with tempfile.TemporaryDirectory(prefix="finadapt_resume_") as directory:
                storage.copy_tree(self.resume_from, directory)
                yield directory
            return
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
    """One process, no Ray: datasets are Arrow tables, checkpoints live in `checkpoint_root` (the run dir).

    Same contract as Ray Train: the latest checkpoint under the run dir is resumed from (also one left
    by an earlier run of this name), and `num_to_keep` best checkpoints by `score` are kept, plus the latest.
    """

    def __init__(self, datasets: dict[str, pa.Table], checkpoint_root: str | Path,
                 score: tuple[str, str] | None = None, num_to_keep: int | None = None):
        self.rank, self.world_size, self.local_rank, self.distributed = 0, 1, 0, False
        self.datasets = datasets
        self.root = Path(checkpoint_root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.score, self.num_to_keep = score, num_to_keep
        self.reports: list[dict] = []
        self.checkpoints: list[tuple[Path, dict]] = self._existing()

    def _existing(self) -> list[tuple[Path, dict]]:
        """Checkpoints a previous run of this name left (either path: Ray's dirs are found too)."""
        found = []
        for meta_file in self.root.glob(f"*/{META_FILE}"):
            meta = json.loads(meta_file.read_text())
            found.append((meta_file.parent, dict(meta.get("metrics") or {}, step=meta.get("state", {}).get("step", 0))))
        return sorted(found, key=lambda dm: dm[1]["step"])

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
            target = self.root / f"checkpoint_step{int(metrics.get('step', len(self.checkpoints))):07d}"
            if target.exists():
                shutil.rmtree(target)
            staging = Path(tempfile.mkdtemp(prefix=".staging_", dir=self.root))
            shutil.copytree(checkpoint_dir, staging, dirs_exist_ok=True)
            staging.rename(target)  # a checkpoint dir is complete or absent
            self.checkpoints = [(d, m) for d, m in self.checkpoints if d != target] + [(target, dict(metrics))]
            self._delete_old()

    def _delete_old(self) -> None:
        """Ray's rule: the `num_to_keep` best by score stay, and the latest (needed to resume)."""
        if self.num_to_keep is None or self.score is None or len(self.checkpoints) <= self.num_to_keep:
            return
        key, mode = self.score
        worst = -math.inf if mode == "max" else math.inf

        def value(dm):
            v = dm[1].get(key, worst)
            return v if mode == "max" else -v

        ranked = sorted(self.checkpoints[:-1], key=value, reverse=True)
        keep_best = {d for d, _ in sorted(self.checkpoints, key=value, reverse=True)[: self.num_to_keep]}
        for directory, _ in ranked:
            if directory not in keep_best:
                shutil.rmtree(directory, ignore_errors=True)
        latest = self.checkpoints[-1][0]
        self.checkpoints = [(d, m) for d, m in self.checkpoints if d in keep_best or d == latest]

    def all_reduce(self, tensor: torch.Tensor) -> None:
        return None

    def broadcast_object(self, value):
        return value
