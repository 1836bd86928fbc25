"""Corpus stage entrypoint, for `python pipelines/prepare_corpus.py` and `ray job submit`.

    ray job submit --working-dir . -- python pipelines/prepare_corpus.py \
        --config pipelines/configs/corpus.yaml output_dir=s3://bucket/corpus

Arguments after the config are `key.sub=value` overrides of `finadapt.data.pipeline.CorpusConfig`.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from finadapt.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="pipelines/configs/corpus.yaml", help="CorpusConfig YAML")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from finadapt.data.pipeline import CorpusConfig, run_corpus

    try:
        cfg = load_config(CorpusConfig, args.config, args.overrides)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    manifest = run_corpus(cfg)
    print(json.dumps({"documents_per_stage": manifest["documents_per_stage"], "packing": {
        k: v for k, v in manifest["packing"].items() if k != "shards"}}, indent=2))
    print(f"shards, manifest.json and report.md written to {cfg.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
