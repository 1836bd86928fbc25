"""FLARE evaluation entrypoint, for `python pipelines/evaluate.py` and `ray job submit`.

    ray job submit --working-dir . -- python pipelines/evaluate.py \
        --config pipelines/configs/evaluate.yaml model.spec=/models/my-checkpoint output_dir=s3://bucket/eval

Arguments after the config are `key.sub=value` overrides of `finadapt.config.EvalConfig`.
"""
from __future__ import annotations

import sys

from finadapt.config import EvalConfig, entrypoint_config


def main(argv: list[str] | None = None) -> int:
    cfg = entrypoint_config(EvalConfig, __doc__, "pipelines/configs/evaluate.yaml", argv)
    if cfg is None:
        return 2
    from finadapt.errors import FinadaptError, report
    from finadapt.evaluate.api import evaluate
    from finadapt.evaluate.report import markdown_table

    try:
        _, results = evaluate(cfg)
    except FinadaptError as err:  # one line naming the place; the traceback is in the log file
        return report(err)
    print(markdown_table(results))
    print(f"results written to {cfg.output_dir}")
    for failed in results["failed_tasks"]:
        print(f"failed task {failed['task']}: {' '.join(failed['error'].split())}", file=sys.stderr)
    return 2 if results["failed_tasks"] else 0


if __name__ == "__main__":
    sys.exit(main())
