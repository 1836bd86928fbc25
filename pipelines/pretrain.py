"""Stage 1 entrypoint (further pre-training), for `python pipelines/pretrain.py` and `ray job submit`.

    ray job submit --working-dir . -- python pipelines/pretrain.py \
        --config pipelines/configs/pretrain.yaml data.shards=s3://bucket/corpus checkpoint.storage_path=s3://bucket/train

Arguments after the config are `key.sub=value` overrides of `finadapt.train.PretrainConfig`.
Running again with the same checkpoint.name / storage_path resumes from the latest checkpoint.
"""
from __future__ import annotations

import sys

from finadapt.config import entrypoint_config
from finadapt.train import PretrainConfig
from finadapt.train.cli_support import run_stage


def main(argv: list[str] | None = None) -> int:
    cfg = entrypoint_config(PretrainConfig, __doc__, "pipelines/configs/pretrain.yaml", argv)
    return 2 if cfg is None else run_stage(cfg)


if __name__ == "__main__":
    sys.exit(main())
