"""Stage 2 entrypoint (instruction tuning), for `python pipelines/sft.py` and `ray job submit`.

    ray job submit --working-dir . -- python pipelines/sft.py \
        --config pipelines/configs/sft.yaml model.spec=runs/pretrain/best

Arguments after the config are `key.sub=value` overrides of `finadapt.train.SftConfig` (stage `sft`).
Running again with the same checkpoint.name / storage_path resumes from the latest checkpoint when the
training config matches (checkpoint.resume=fresh starts over, =force resumes a changed config).
"""
import sys

from finadapt.stages import run_entrypoint


def main(argv: list[str] | None = None) -> int:
    return run_entrypoint("sft", argv)


if __name__ == "__main__":
    sys.exit(main())
