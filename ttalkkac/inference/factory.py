"""Building engines and the generator from settings; the default base model."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from ttalkkac.adapters import AdapterRef
from ttalkkac.inference.base import Engine
from ttalkkac.inference.service import PlanGenerator
from ttalkkac.settings import Settings

logger = logging.getLogger(__name__)

EngineKind = Literal["vllm", "transformers"]
ServingMode = Literal["merged", "lora"]


def has_cuda() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


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


def default_base_model(settings: Settings) -> tuple[str, Callable[[], object] | None]:
    """BASE_MODEL if set; else GPU_BASE_MODEL on a CUDA host; else the SmolLM2 demo model.

    Returns the model's id or path and, for the demo model, the step that builds its folder
    (tens of seconds on first use), which the engine runs off the event loop when it starts.
    """
    if settings.base_model:
        return settings.base_model, None
    if has_cuda():
        return settings.gpu_base_model, None
    from ttalkkac.demo_model import demo_model_path, ensure_demo_model

    models_dir = settings.models_dir
    return str(demo_model_path(models_dir)), lambda: ensure_demo_model(models_dir)


def resolve_base_model(settings: Settings) -> str:
    """``default_base_model``, with the demo model built if needed (blocking)."""
    base, prepare = default_base_model(settings)
    if prepare is not None:
        prepare()
    return base


def resolve_serving_mode(settings: Settings) -> ServingMode:
    """SERVING_MODE, with 'auto' decided by the hardware: merged on a CPU, LoRA on a GPU.

    vLLM's CPU build applies LoRA through a PyTorch fallback (3.5x slower at 16 requests than
    plain weights, NOTES); on GPUs its LoRA kernels are fast and per-request adapters are free.
    """
    if settings.serving_mode != "auto":
        return settings.serving_mode
    return "lora" if has_cuda() else "merged"


def build_engine(
    settings: Settings,
    *,
    base_model: str | None = None,
    kind: EngineKind | None = None,
    mode: ServingMode = "lora",
    weights: str | None = None,
    merged_adapter: AdapterRef | None = None,
) -> Engine:
    """An engine (not started) for ``base_model`` (default: ``default_base_model``).

    ``mode="merged"``: an engine of the merged serving mode, without LoRA (vLLM's CPU build
    compiles no engine with LoRA enabled, and its LoRA layers slow every request); ``weights``
    are loaded instead of the base model's (the folder with ``merged_adapter`` folded in; None:
    the base weights).
    """
    base, prepare = (base_model, None) if base_model else default_base_model(settings)
    kind = kind or settings.serving_engine
    enable_lora = mode != "merged"
    dtype = resolve_serving_dtype(settings)
    if kind == "vllm":
        from ttalkkac.inference.vllm_engine import VllmEngine

        return VllmEngine(
            base,
            max_model_len=settings.max_model_len,
            enable_lora=enable_lora,
            max_lora_rank=settings.max_lora_rank,
            max_loras=settings.max_loras,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            cpu_kvcache_space_gb=settings.cpu_kvcache_space_gb,
            dtype=dtype,
            enforce_eager=settings.enforce_eager,
            prepare=prepare,
            weights=weights,
            merged_adapter=merged_adapter,
        )
    if kind == "transformers":
        from ttalkkac.inference.hf_engine import TransformersEngine

        return TransformersEngine(
            base,
            max_model_len=settings.max_model_len,
            dtype=dtype,
            max_loras=settings.max_loras,
            prepare=prepare,
            weights=weights,
            merged_adapter=merged_adapter,
            enable_lora=enable_lora,
        )
    raise ValueError(f"unknown engine {kind!r}; use 'vllm' or 'transformers'")


def build_generator(
    settings: Settings,
    *,
    engine: Engine | None = None,
    base_model: str | None = None,
    kind: EngineKind | None = None,
    mode: ServingMode = "lora",
) -> PlanGenerator:
    """The generator; in merged mode with ENABLE_LORA, with its LoRA engine (started on demand)."""
    engine = engine or build_engine(settings, base_model=base_model, kind=kind, mode=mode)
    build_lora_engine = None
    if mode == "merged" and settings.enable_lora:

        def build_lora_engine() -> Engine:
            return build_engine(settings, base_model=base_model, kind=kind, mode="lora")

    return PlanGenerator.from_settings(engine, settings, build_lora_engine=build_lora_engine)
