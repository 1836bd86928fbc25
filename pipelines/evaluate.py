"""FLARE evaluation entrypoint, for `python pipelines/evaluate.py` and `ray job submit`.

    ray job submit --working-dir . -- python pipelines/evaluate.py \
        --config pipelines/configs/evaluate.yaml model.spec=/models/my-checkpoint output_dir=s3://bucket/eval

Arguments after the config are `key.sub=value` overrides of `finadapt.config.EvalConfig` (stage `eval`).
"""
import sys

from finadapt.stages import run_entrypoint


def main(argv: list[str] | None = None) -> int:
    return run_entrypoint("eval", argv)


if __name__ == "__main__":
    sys.exit(main())
