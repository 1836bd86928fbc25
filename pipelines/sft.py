"""Stage 2 entrypoint (instruction tuning), for `python pipelines/sft.py` and `ray job submit`.

    ray job submit --working-dir . -- python pipelines/sft.py \
        --config pipelines/configs/sft.yaml model.spec=runs/pretrain/best

Arguments after the config are `key.sub=value` overrides of `finadapt.train.SftConfig`.
Running again with the same checkpoint.name / storage_path resumes from the latest checkpoint.
"""
from __future__ import annotations

import sys

from finadapt.config import entrypoint_config
from finadapt.train import SftConfig
from finadapt.train.cli_support import run_stage


def main(argv: list[str] | None = None) -> int:
    cfg = entrypoint_config(SftConfig, __doc__, "pipelines/configs/sft.yaml", argv)
    return 2 if cfg is None else run_stage(cfg)


if __name__ == "__main__":
    sys.exit(main())
