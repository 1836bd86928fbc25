"""Synthetic-instruction entrypoint, for `python pipelines/synthesize.py` and `ray job submit`.

    ray job submit --working-dir . -- python pipelines/synthesize.py \
        --config pipelines/configs/synth.yaml output_dir=s3://bucket/synth requests_per_task=500

Arguments after the config are `key.sub=value` overrides of `finadapt.synth.SynthConfig`.
"""
from __future__ import annotations

import json
import sys

from finadapt.config import entrypoint_config
from finadapt.synth import synthesize
from finadapt.synth.config import SynthConfig
from finadapt.synth.report import markdown


def main(argv: list[str] | None = None) -> int:
    cfg = entrypoint_config(SynthConfig, __doc__, "pipelines/configs/synth.yaml", argv)
    if cfg is None:
        return 2
    from finadapt.errors import FinadaptError, report

    try:
        summary = synthesize(cfg)
    except FinadaptError as err:  # one line naming the place; the traceback is in the log file
        return report(err)
    print(markdown(summary, summary))
    print(json.dumps(summary["totals"], indent=2))
    print(f"synthetic.jsonl, quarantine.jsonl and the report written to {cfg.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
