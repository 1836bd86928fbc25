"""Stage 1 entrypoint (further pre-training), for `python pipelines/pretrain.py` and `ray job submit`.

    ray job submit --working-dir . -- python pipelines/pretrain.py \
        --config pipelines/configs/pretrain.yaml data.shards=s3://bucket/corpus checkpoint.storage_path=s3://bucket/train

Arguments after the config are `key.sub=value` overrides of `finadapt.train.PretrainConfig`.
Running again with the same checkpoint.name / storage_path resumes from the latest checkpoint when the
training config matches (checkpoint.resume=fresh starts over, =force resumes a changed config).
"""
from __future__ import annotations

import sys

from finadapt.config import entrypoint_config
from finadapt.errors import FinadaptError, report
from finadapt.train import PretrainConfig
from finadapt.train.cli_support import run_stage


def main(argv: list[str] | None = None) -> int:
    cfg = entrypoint_config(PretrainConfig, __doc__, "pipelines/configs/pretrain.yaml", argv)
    if cfg is None:
        return 2
    try:
        return run_stage(cfg)
    except FinadaptError as err:  # run name holds another config, output not writable, bad data: one line
        return report(err)


if __name__ == "__main__":
    sys.exit(main())
