"""Corpus stage entrypoint, for `python pipelines/prepare_corpus.py` and `ray job submit`.

    ray job submit --working-dir . -- python pipelines/prepare_corpus.py \
        --config pipelines/configs/corpus.yaml output_dir=s3://bucket/corpus

Arguments after the config are `key.sub=value` overrides of `finadapt.data.pipeline.CorpusConfig` (stage `corpus`).
"""
import sys

from finadapt.stages import run_entrypoint


def main(argv: list[str] | None = None) -> int:
    return run_entrypoint("corpus", argv)


if __name__ == "__main__":
    sys.exit(main())
