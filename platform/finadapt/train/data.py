"""Training tables for both stages, as Arrow (Ray Data wraps them; the local session uses them as is)."""
from __future__ import annotations

import logging
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from finadapt import storage
from finadapt.config import ConfigError
from finadapt.errors import InputError, InputNotFoundError
from finadapt.models import load_tokenizer
from finadapt.train.config import PretrainConfig, SftConfig
from finadapt.train.sft_data import encode_samples, training_samples

log = logging.getLogger(__name__)


def shard_files(location: str) -> list[str]:
    """Parquet shards of a corpus run (`<dir>/shards/*.parquet`), a folder of parquet, or one file."""
    if location.endswith(".parquet"):
        return [location]
    for folder in (storage.join(location, "shards"), location):
        try:
            files = storage.list_files(folder, suffix=".parquet")
        except storage.StorageError:
            files = []
        if files:
            return sorted(files)
    raise InputNotFoundError(f"no parquet shards under {location} (expected {location}/shards/*.parquet "
                            "from `finadapt corpus`)")


def _read(files: list[str]) -> pa.Table:
    tables = []
    for uri in files:
        fs, path = storage.filesystem_for(uri)
        table = pq.read_table(path, filesystem=fs)
        missing = {"input_ids", "n_tokens"} - set(table.column_names)
        if missing:
            raise InputError(f"{uri}: not a packed shard (missing columns {sorted(missing)})")
        tables.append(table.select(["input_ids", "n_tokens"]))
    return pa.concat_tables(tables)


def rewindow(table: pa.Table, seq_len: int | None) -> pa.Table:
    """Cut packed rows into `seq_len` windows (short sequences for small machines); no token lost."""
    if seq_len is None:
        return table
    column = table.column("input_ids").combine_chunks()
    width = column.type.list_size
    if width == seq_len:
        return table
    if width % seq_len:
        raise ConfigError(f"data.seq_len {seq_len} must divide the packed length {width}")
    k = width // seq_len
    ids = column.flatten().to_numpy().reshape(-1, seq_len)
    lengths = np.asarray(table.column("n_tokens"))
    windows = np.clip(lengths[:, None] - (np.arange(k) * seq_len)[None, :], 0, seq_len).reshape(-1)
    keep = windows > 0
    return pa.table({"input_ids": pa.FixedSizeListArray.from_arrays(pa.array(ids[keep].reshape(-1)), seq_len),
                     "n_tokens": pa.array(windows[keep], pa.int64())})


def pretrain_tables(cfg: PretrainConfig) -> tuple[pa.Table, pa.Table, dict]:
    files = shard_files(cfg.data.shards)
    if len(files) <= cfg.data.val_shards:
        raise ConfigError(f"{cfg.data.shards}: {len(files)} shard file(s), need more than data.val_shards="
                         f"{cfg.data.val_shards} to hold some out for validation")
    train_files, val_files = files[: -cfg.data.val_shards], files[-cfg.data.val_shards:]
    train = rewindow(_read(train_files), cfg.data.seq_len)
    val = rewindow(_read(val_files), cfg.data.seq_len)
    order = np.random.default_rng(cfg.seed).permutation(train.num_rows)
    train = train.take(order)
    if cfg.data.limit_sequences:
        train = train.slice(0, cfg.data.limit_sequences)
    if cfg.data.val_sequences:
        val = val.slice(0, cfg.data.val_sequences)
    info = {"train_files": train_files, "val_files": val_files, "train_sequences": train.num_rows,
            "val_sequences": val.num_rows, "train_tokens": int(np.asarray(train.column("n_tokens")).sum()),
            "seq_len": train.column("input_ids").type.list_size}
    return train, val, info


def sft_table(cfg: SftConfig) -> tuple[pa.Table, dict]:
    samples = training_samples(cfg.data, cfg.seed)
    random.Random(cfg.data.shuffle_seed).shuffle(samples)
    tokenizer = load_tokenizer(cfg.model.spec, cfg.model.trust_remote_code)
    encoded = encode_samples(samples, tokenizer, cfg.data.template, cfg.data.max_length)
    info = encoded.stats()
    if encoded.truncated:
        log.warning("%d training prompts were longer than data.max_length=%d and lost their beginning",
                    encoded.truncated, cfg.data.max_length)
    return encoded.to_arrow(), info


def plan_steps(cfg, train_rows: int, num_workers: int) -> dict:
    effective = cfg.batch.effective
    steps_per_epoch = train_rows // effective
    if steps_per_epoch < 1:
        raise ConfigError(f"{train_rows} training rows are fewer than one effective batch ({effective}); "
                         "lower batch.batch_size / batch.grad_accum or add data")
    total = int(np.ceil(cfg.epochs * steps_per_epoch))
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    return {"steps_per_epoch": steps_per_epoch, "total_steps": total, "train_rows": train_rows,
            "rows_per_worker_step": cfg.batch.per_worker(max(num_workers, 1)),
            "dropped_rows_per_epoch": train_rows - steps_per_epoch * effective}
