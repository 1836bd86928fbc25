"""Corpus stage entrypoint, for `python pipelines/prepare_corpus.py` and `ray job submit`.

    ray job submit --working-dir . -- python pipelines/prepare_corpus.py \
        --config pipelines/configs/corpus.yaml output_dir=s3://bucket/corpus

Arguments after the config are `key.sub=value` overrides of `finadapt.data.pipeline.CorpusConfig`.
"""
from __future__ import annotations

import json
import sys

from finadapt.config import entrypoint_config
from finadapt.data.pipeline import CorpusConfig, run_corpus


def main(argv: list[str] | None = None) -> int:
    cfg = entrypoint_config(CorpusConfig, __doc__, "pipelines/configs/corpus.yaml", argv)
    if cfg is None:
        return 2
    from finadapt.errors import FinadaptError, report

    try:
        manifest = run_corpus(cfg)
    except FinadaptError as err:  # one line naming the place; the traceback is in the log file
        return report(err)
    print(json.dumps({"documents_per_stage": manifest["documents_per_stage"], "packing": {
        k: v for k, v in manifest["packing"].items() if k != "shards"}}, indent=2))
    print(f"shards, manifest.json and report.md written to {cfg.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
