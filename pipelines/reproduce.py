"""End-to-end reproduction entrypoint, for `python pipelines/reproduce.py` and `ray job submit`.

    ray job submit --working-dir . -- python pipelines/reproduce.py \
        --config pipelines/configs/reproduce_cpu.yaml results_dir=$PWD/results/reproduce-cpu work_dir=$PWD/runs/reproduce-cpu

Arguments after the config are `key.sub=value` overrides of `finadapt.reproduce.ReproduceConfig` (stage
`reproduce`). Running again skips every step whose committed record matches its key.
"""
import sys

from finadapt.stages import run_entrypoint


def main(argv: list[str] | None = None) -> int:
    return run_entrypoint("reproduce", argv)


if __name__ == "__main__":
    sys.exit(main())
