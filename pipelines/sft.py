"""Stage 2 entrypoint (instruction tuning), for `python pipelines/sft.py` and `ray job submit`.

    ray job submit --working-dir . -- python pipelines/sft.py \
        --config pipelines/configs/sft.yaml model.spec=runs/pretrain/best

Arguments after the config are `key.sub=value` overrides of `finadapt.train.SftConfig`.
Running again with the same checkpoint.name / storage_path resumes from the latest checkpoint when the
training config matches (checkpoint.resume=fresh starts over, =force resumes a changed config).
"""
from __future__ import annotations

import sys

from finadapt.config import entrypoint_config
from finadapt.errors import FinadaptError, report
from finadapt.train import SftConfig
from finadapt.train.cli_support import run_stage


def main(argv: list[str] | None = None) -> int:
    cfg = entrypoint_config(SftConfig, __doc__, "pipelines/configs/sft.yaml", argv)
    if cfg is None:
        return 2
    try:
        return run_stage(cfg)
    except FinadaptError as err:  # run name holds another config, output not writable, bad data: one line
        return report(err)


if __name__ == "__main__":
    sys.exit(main())
