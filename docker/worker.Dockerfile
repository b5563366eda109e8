# syntax=docker/dockerfile:1
# The Celery training worker for CUDA GPU hosts: CUDA torch 2.13.0, transformers, PEFT, TRL.
# No vLLM: the worker trains and evaluates with transformers; only the API serves with vLLM.
#
# No CUDA base image either: PyPI's Linux torch wheel is the CUDA build and brings its CUDA
# runtime, cuDNN and NCCL as `nvidia-*` wheels, so the host only has to provide the driver
# (NVIDIA Container Toolkit). Two stages: the build stage creates the virtual environment, the
# runtime stage copies only that, leaving pip's caches and the sources behind.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch alone first (the layer is cached across source changes): the pinned version, CUDA build.
RUN pip install "torch==2.13.0"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scripts/constraints.txt scripts/constraints.txt
COPY ttalkkac ttalkkac
COPY app app
COPY worker worker
# constraints.txt pins the CPU install; drop what differs on CUDA (torch's own pins decide).
RUN grep -vE '^(torch|triton|nvidia-|vllm)' scripts/constraints.txt > /tmp/constraints-gpu.txt \
    && pip install -c /tmp/constraints-gpu.txt . \
    && python -c "import torch, peft, trl, celery, ttalkkac, worker; print('torch', torch.__version__)"

FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    DATA_DIR=/data \
    HF_HOME=/cache/huggingface
COPY --from=build /opt/venv /opt/venv
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin ttalkkac \
    && mkdir -p /data/jobs /cache/huggingface \
    && chown -R ttalkkac:ttalkkac /data /cache
USER ttalkkac
WORKDIR /home/ttalkkac

# A worker that answers a broadcast ping is connected to the broker and its main process is not
# stuck; the training itself runs in a pool child, so a long job does not fail the check.
HEALTHCHECK --interval=60s --timeout=30s --start-period=60s --retries=3 \
    CMD celery -A worker.celery_app:celery_app inspect ping -d "celery@$HOSTNAME" --timeout 20 >/dev/null || exit 1
CMD ["ttalkkac", "worker"]
