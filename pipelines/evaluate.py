"""FLARE evaluation entrypoint, for `python pipelines/evaluate.py` and `ray job submit`.

    ray job submit --working-dir . -- python pipelines/evaluate.py \
        --config pipelines/configs/evaluate.yaml model.spec=/models/my-checkpoint output_dir=s3://bucket/eval

Arguments after the config are `key.sub=value` overrides of `finadapt.config.EvalConfig`.
"""
from __future__ import annotations

import argparse
import logging
import sys

from finadapt.config import ConfigError, EvalConfig, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="pipelines/configs/evaluate.yaml", help="EvalConfig YAML")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(EvalConfig, args.config, args.overrides)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    from finadapt.evaluate.api import evaluate
    from finadapt.evaluate.report import markdown_table

    _, results = evaluate(cfg)
    print(markdown_table(results))
    print(f"results written to {cfg.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
