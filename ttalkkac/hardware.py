"""What this machine has, and the choices that follow from it: base model, serving dtype and mode.

One place for a policy that the serving factory, the launcher (``ttalkkac up``), the training
CLI and the worker all apply, so they cannot drift apart:

- base model: BASE_MODEL if set; else GPU_BASE_MODEL on a host with a CUDA GPU; else the SmolLM2
  demo model, built on first use (``choose_base_model``; an explicit ``--base-model`` flag is the
  caller's and wins over all of them).
- serving dtype: SERVING_DTYPE, with 'auto' bfloat16 only where the CPU computes it in hardware
  (``resolve_serving_dtype``).
- serving mode: SERVING_MODE, with 'auto' merged on a CPU and per-request LoRA on a GPU
  (``resolve_serving_mode``).
- training device: ``Device.detect`` (kind, bf16 support, name), which the run plan's precision
  fixes read.

Two ways to ask for a GPU, because their costs differ: ``has_cuda`` asks torch (the answer the
engines and the trainer will get, in processes that load torch anyway), ``nvidia_gpu_present``
asks the driver without importing torch (the launcher, which only starts other processes). No
torch import at module level: the API and the CLI import this module without loading torch.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ttalkkac.demo_model import demo_model_path, ensure_demo_model
from ttalkkac.settings import Settings

ServingMode = Literal["merged", "lora"]


# --- what the machine has -------------------------------------------------------------------


def has_cuda() -> bool:
    """Whether torch sees a CUDA GPU (imports torch; no CUDA context is created)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def nvidia_gpu_present() -> bool:
    """A cheap check that does not import torch: the NVIDIA driver is loaded and sees a GPU."""
    if not Path("/proc/driver/nvidia/version").exists() or not shutil.which("nvidia-smi"):
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The first CPU's feature flags in ``cpuinfo`` (default: /proc/cpuinfo; none if unreadable)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bfloat16 in hardware (AVX-512 bf16 or AMX)."""
    return bool(cpu_flags(cpuinfo) & {"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True)
class Device:
    """What a training run executes on; decides precision (``training.spec.plan_run``)."""

    kind: Literal["cpu", "cuda", "mps"]
    bf16_supported: bool = False
    name: str = ""

    @classmethod
    def detect(cls) -> Device:
        import torch

        if has_cuda():
            return cls("cuda", torch.cuda.is_bf16_supported(), torch.cuda.get_device_name(0))
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return cls("mps", False, "mps")
        return cls("cpu", False, "cpu")


# --- what follows from it -------------------------------------------------------------------


@dataclass(frozen=True)
class BaseModelChoice:
    """The base model to serve or train, why it was chosen, and how to make it exist."""

    model: str  # a hub id or a folder
    reason: str  # which rule chose it, for logs
    # Builds the model's folder (the demo model: tens of seconds on first use, idempotent).
    prepare: Callable[[], object] | None = None


def choose_base_model(
    settings: Settings, *, has_gpu: Callable[[], bool] = has_cuda
) -> BaseModelChoice:
    """BASE_MODEL if set; else GPU_BASE_MODEL where ``has_gpu()``; else the SmolLM2 demo model.

    Nothing is built here: the demo model's ``prepare`` is run by whoever needs the files (an
    engine runs it off the event loop when it starts). ``has_gpu`` is asked only when BASE_MODEL
    is unset.
    """
    models_dir = settings.models_dir
    if settings.base_model:
        # The demo model's folder named outright (``ttalkkac up`` passes it to its children,
        # which may start before it is built): whoever needs the files builds or waits for it.
        demo = str(demo_model_path(models_dir))
        if Path(settings.base_model) == Path(demo):
            return BaseModelChoice(demo, "BASE_MODEL", lambda: ensure_demo_model(models_dir))
        return BaseModelChoice(settings.base_model, "BASE_MODEL")
    if has_gpu():
        return BaseModelChoice(settings.gpu_base_model, "GPU_BASE_MODEL (a CUDA GPU is present)")
    return BaseModelChoice(
        str(demo_model_path(models_dir)),
        "demo model (no GPU, BASE_MODEL unset)",
        lambda: ensure_demo_model(models_dir),
    )


def resolve_base_model(settings: Settings) -> str:
    """``choose_base_model``, with the demo model built if needed (blocking)."""
    choice = choose_base_model(settings)
    if choice.prepare is not None:
        choice.prepare()
    return choice.model


def resolve_serving_dtype(settings: Settings) -> str:
    """SERVING_DTYPE, with 'auto' decided by the hardware.

    vLLM's own 'auto' picks bfloat16 on every x86 CPU and the transformers engine would too, but
    without AVX-512 bf16 or AMX torch emulates it (0.28 GFLOP/s against 11.6 in float32 on the
    same two AVX2 cores). On a GPU the model's own dtype is right (vLLM falls back where a GPU
    lacks it).
    """
    if settings.serving_dtype != "auto":
        return settings.serving_dtype
    if has_cuda():
        return "auto"
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def resolve_serving_mode(settings: Settings) -> ServingMode:
    """SERVING_MODE, with 'auto' decided by the hardware: merged on a CPU, LoRA on a GPU.

    vLLM's CPU build applies LoRA through a PyTorch fallback (3.5x slower at 16 requests than
    plain weights, NOTES); on GPUs its LoRA kernels are fast and per-request adapters are free.
    """
    if settings.serving_mode != "auto":
        return settings.serving_mode
    return "lora" if has_cuda() else "merged"
