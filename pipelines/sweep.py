"""Sweep entrypoint (Ray Tune over stage 2), for `python pipelines/sweep.py` and `ray job submit`.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python pipelines/sweep.py --config pipelines/configs/sweep_cpu.yaml storage_path=$PWD/runs/sweeps
    ... python pipelines/sweep.py --config pipelines/configs/sweep_cpu.yaml --resume   # after an interruption

Arguments after the config are `key.sub=value` overrides of `finadapt.tune.config.SweepConfig`
(`base_overrides=[...]` for the stage config). Give an absolute or s3:// storage_path under a job
(it runs in a temporary copy of the working dir). To guard the trials' Ray Train workers against test
reads on a cluster too, submit with --runtime-env-json '{"env_vars": {"FINADAPT_FORBIDDEN_SPLITS": "test"}}'
(the sweep lifts it in the driver for the best model's single test scoring).
"""
import sys

from finadapt.tune.cli import entrypoint

if __name__ == "__main__":
    sys.exit(entrypoint())
