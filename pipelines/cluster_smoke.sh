#!/usr/bin/env bash
# The cluster smoke job: a small real run of three stages, chained as a `ray job submit` entrypoint.
#   1. corpus stage on the first records of the real Reuters and Wikipedia files (Ray Data tasks),
#   2. stage 2 (instruction tuning) for a few steps, two Ray Train workers on two different nodes,
#   3. evaluation of the trained model on a few FLARE test samples.
# Usage: bash pipelines/cluster_smoke.sh OUT_DIR
# OUT_DIR must be absolute: the job runs in a temporary copy of the working dir, and the stages'
# Ray tasks and workers on every node write there (one machine: any local path; several machines:
# a shared filesystem). Configs: pipelines/configs/cluster_{corpus,sft,eval}.yaml.
set -euo pipefail

out="${1:?usage: bash pipelines/cluster_smoke.sh OUT_DIR (an absolute path)}"
if [[ "$out" != /* ]]; then
  echo "pipelines/cluster_smoke.sh: OUT_DIR $out must be an absolute path (the job runs in a copy of the working dir)" >&2
  exit 2
fi

python pipelines/prepare_corpus.py --config pipelines/configs/cluster_corpus.yaml "output_dir=$out/corpus"
python pipelines/sft.py --config pipelines/configs/cluster_sft.yaml "output_dir=$out/sft" \
  "checkpoint.storage_path=$out/checkpoints"
python pipelines/evaluate.py --config pipelines/configs/cluster_eval.yaml "model.spec=$out/sft/best" \
  "output_dir=$out/eval"
