# Two commands set up and run everything on a fresh machine:
#   make demo   — create .venv, fetch the embedded model, evaluate it zero-shot on the four FLARE tasks
#   make test   — create .venv, run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup demo demo-full corpus test bench-eval bench-dedup job-eval clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip setuptools wheel
	$(BIN)/python -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python pipelines/evaluate.py --config pipelines/configs/demo.yaml

demo-full: $(STAMP)
	$(BIN)/python pipelines/evaluate.py --config pipelines/configs/evaluate.yaml

corpus: $(STAMP)
	$(BIN)/finadapt corpus --config pipelines/configs/corpus.yaml -o runs/corpus

test: $(STAMP)
	@$(BIN)/python -m pytest tests -q -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: treating as failure"; exit 1; fi; exit $$rc

bench-eval: $(STAMP)
	$(BIN)/python benchmarks/eval_speed.py

bench-dedup: $(STAMP)
	$(BIN)/python benchmarks/dedup.py

# Submit the evaluation as a Ray job to a running cluster (RAY_ADDRESS, default the local head).
job-eval: $(STAMP)
	$(BIN)/ray job submit --address $${RAY_ADDRESS:-http://127.0.0.1:8265} --working-dir . \
	  -- python pipelines/evaluate.py --config pipelines/configs/demo.yaml output_dir=$(CURDIR)/results/eval-job

clean:
	rm -rf $(VENV) .pytest_cache
