# syntax=docker/dockerfile:1
# The API with its vLLM engine, for CUDA GPU hosts.
#
# Base: the official vLLM image, not the project on a plain CUDA base with the `gpu` extra.
# vLLM's GPU wheel only runs well with the matching CUDA torch, FlashInfer, NCCL and driver
# libraries that the vLLM team builds and tests together in `vllm/vllm-openai`; reproducing that
# on `nvidia/cuda` means a multi-GB pip install per build and a second, untested stack. The tag
# is pinned to the vLLM version in pyproject.toml (0.32.0, which requires torch 2.13.0, the same
# torch the project pins), so installing the project on top keeps the image's torch and vLLM
# and only adds our pure-Python dependencies.
#
# Single stage: the base image is most of the size (CUDA, torch, vLLM), and what we add is a few
# wheels with nothing to compile, so a build stage would save nothing.
ARG VLLM_IMAGE=vllm/vllm-openai:v0.32.0
FROM ${VLLM_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    DATA_DIR=/data \
    HF_HOME=/cache/huggingface

WORKDIR /app
COPY pyproject.toml README.md ./
COPY scripts/constraints.txt scripts/constraints.txt
COPY ttalkkac ttalkkac
COPY app app
COPY worker worker
# constraints.txt pins the CPU install; torch, triton, CUDA libraries and vLLM stay as the base
# image has them (torch==2.13.0 in pyproject is satisfied by the image's 2.13.0+cuXXX). Recent
# vLLM images install Python packages with uv into the system interpreter; so do we.
RUN grep -vE '^(torch|triton|nvidia-|vllm|xgrammar|flashinfer)' scripts/constraints.txt \
        > /tmp/constraints-gpu.txt \
    && if command -v uv >/dev/null; then \
           uv pip install --system --no-cache -c /tmp/constraints-gpu.txt . ; \
       else \
           python3 -m pip install -c /tmp/constraints-gpu.txt . ; \
       fi \
    && python3 -c "import vllm, torch, ttalkkac, app; print('vllm', vllm.__version__, 'torch', torch.__version__)" \
    && rm -rf /app/ttalkkac /app/app /app/worker /tmp/constraints-gpu.txt

# Non-root. The folders below are mount points of named volumes: Docker copies their owner into
# a new volume, so the service can write there.
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin ttalkkac \
    && mkdir -p /data/jobs /cache/huggingface \
    && chown -R ttalkkac:ttalkkac /data /cache
USER ttalkkac
WORKDIR /home/ttalkkac

EXPOSE 8000
# /health answers while the process is up; /ready (engine loaded) is what a load balancer should
# route on. The start period covers a first download of the base model into the HF cache.
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"
ENTRYPOINT []
CMD ["ttalkkac", "api", "--host", "0.0.0.0", "--port", "8000"]
