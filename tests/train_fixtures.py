"""Small inputs in the real formats of the training stages (packed parquet shards, FLARE samples)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from finadapt.data.pack import pack_batch
from finadapt.models import build_byte_tokenizer


def write_shards(folder: Path, n_files: int = 3, docs_per_file: int = 30, seq_len: int = 64, seed: int = 0) -> Path:
    """`<folder>/shards/part-i.parquet` as the corpus stage writes them (EOS between documents)."""
    tok = build_byte_tokenizer()
    rng = np.random.default_rng(seed)
    shard_dir = folder / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        docs = [np.append(rng.integers(3, len(tok), size=rng.integers(20, 90)), tok.eos_token_id)
                for _ in range(docs_per_file)]
        table = pack_batch({"input_ids": np.array(docs + [None], dtype=object)[:-1]}, seq_len,
                           pad_id=tok.pad_token_id)
        pq.write_table(table, shard_dir / f"part-{i}.parquet")
    return folder


def pretrain_cfg(shards: Path, tmp: Path, **extra) -> dict:
    cfg = {
        "model": {"spec": "tiny-random"}, "data": {"shards": str(shards), "val_sequences": 8},
        "batch": {"batch_size": 4, "grad_accum": 2, "micro_batch_size": 4}, "max_steps": 6,
        "eval_every_steps": 2, "optim": {"warmup_ratio": 0.0, "lr": 1e-3},
        "ray": {"workers": 1, "cpus_per_worker": 1, "num_cpus": 2},
        "checkpoint": {"storage_path": str(tmp / "ckpt"), "name": "run", "num_to_keep": 2},
        "output_dir": str(tmp / "out"),
    }
    return with_extra(cfg, extra)


def with_extra(cfg: dict, extra: dict) -> dict:
    """`section__field=value` sets cfg[section][field]; a plain `key=value` sets cfg[key]."""
    for key, value in extra.items():
        section, _, field = key.partition("__")
        if field:
            cfg.setdefault(section, {})[field] = value
        else:
            cfg[key] = value
    return cfg
