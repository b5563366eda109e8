"""Building engines and the generator from settings; the default base model."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

from ttalkkac.inference.base import Engine
from ttalkkac.inference.service import PlanGenerator
from ttalkkac.settings import Settings

logger = logging.getLogger(__name__)

EngineKind = Literal["vllm", "transformers"]


def has_cuda() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


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


def build_engine(
    settings: Settings, *, base_model: str | None = None, kind: EngineKind | None = None
) -> Engine:
    """An engine (not started) for ``base_model`` (default: ``default_base_model``)."""
    base, prepare = (base_model, None) if base_model else default_base_model(settings)
    kind = kind or settings.serving_engine
    if kind == "vllm":
        from ttalkkac.inference.vllm_engine import VllmEngine

        return VllmEngine(
            base,
            max_model_len=settings.max_model_len,
            enable_lora=True,
            max_lora_rank=settings.max_lora_rank,
            max_loras=settings.max_loras,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            cpu_kvcache_space_gb=settings.cpu_kvcache_space_gb,
            prepare=prepare,
        )
    if kind == "transformers":
        from ttalkkac.inference.hf_engine import TransformersEngine

        return TransformersEngine(
            base,
            max_model_len=settings.max_model_len,
            max_loras=settings.max_loras,
            prepare=prepare,
        )
    raise ValueError(f"unknown engine {kind!r}; use 'vllm' or 'transformers'")


def build_generator(
    settings: Settings,
    *,
    engine: Engine | None = None,
    base_model: str | None = None,
    kind: EngineKind | None = None,
) -> PlanGenerator:
    engine = engine or build_engine(settings, base_model=base_model, kind=kind)
    return PlanGenerator.from_settings(engine, settings)
