"""Sweep entrypoint (Ray Tune over stage 2), for `python pipelines/sweep.py` and `ray job submit`.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python pipelines/sweep.py --config pipelines/configs/sweep_cpu.yaml storage_path=$PWD/runs/sweeps
    ... python pipelines/sweep.py --config pipelines/configs/sweep_cpu.yaml --resume   # after an interruption

Arguments after the config are `key.sub=value` overrides of `finadapt.tune.config.SweepConfig`
(`base_overrides=[...]` for the stage config). Give an absolute or s3:// storage_path under a job
(it runs in a temporary copy of the working dir). Trials and their Ray Train workers cannot read a
test split (finadapt.tasks.split_guard); only the driver scores the best model on test, once.
"""
import sys

from finadapt.tune.cli import entrypoint

if __name__ == "__main__":
    sys.exit(entrypoint())
