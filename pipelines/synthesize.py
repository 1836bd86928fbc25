"""Synthetic-instruction entrypoint, for `python pipelines/synthesize.py` and `ray job submit`.

    ray job submit --working-dir . -- python pipelines/synthesize.py \
        --config pipelines/configs/synth.yaml output_dir=s3://bucket/synth requests_per_task=500

Arguments after the config are `key.sub=value` overrides of `finadapt.synth.config.SynthConfig` (stage `synth`).
"""
import sys

from finadapt.stages import run_entrypoint


def main(argv: list[str] | None = None) -> int:
    return run_entrypoint("synth", argv)


if __name__ == "__main__":
    sys.exit(main())
