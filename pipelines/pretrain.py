"""Stage 1 entrypoint (further pre-training), for `python pipelines/pretrain.py` and `ray job submit`.

    ray job submit --working-dir . -- python pipelines/pretrain.py \
        --config pipelines/configs/pretrain.yaml data.shards=s3://bucket/corpus ray.workers=4

Arguments after the config are `key.sub=value` overrides of `finadapt.train.PretrainConfig` (stage `pretrain`).
Running again with the same checkpoint.name / storage_path resumes from the latest checkpoint when the
training config matches (checkpoint.resume=fresh starts over, =force resumes a changed config).
"""
import sys

from finadapt.stages import run_entrypoint


def main(argv: list[str] | None = None) -> int:
    return run_entrypoint("pretrain", argv)


if __name__ == "__main__":
    sys.exit(main())
