"""Building engines and the generator from settings.

Which base model, dtype and serving mode the hardware calls for is ``ttalkkac.hardware``'s
decision; this module only turns settings and those choices into engines.
"""

from __future__ import annotations

import logging
from typing import Literal

from ttalkkac.adapters import AdapterRef
from ttalkkac.hardware import ServingMode, choose_base_model, resolve_serving_dtype
from ttalkkac.inference.base import Engine
from ttalkkac.inference.engines import EngineHost
from ttalkkac.inference.service import PlanGenerator
from ttalkkac.settings import Settings

logger = logging.getLogger(__name__)

EngineKind = Literal["vllm", "transformers"]


def build_engine(
    settings: Settings,
    *,
    base_model: str | None = None,
    kind: EngineKind | None = None,
    mode: ServingMode = "lora",
    weights: str | None = None,
    merged_adapter: AdapterRef | None = None,
) -> Engine:
    """An engine (not started) for ``base_model`` (default: ``hardware.choose_base_model``).

    ``mode="merged"``: an engine of the merged serving mode, without LoRA (vLLM's CPU build
    compiles no engine with LoRA enabled, and its LoRA layers slow every request); ``weights``
    are loaded instead of the base model's (the folder with ``merged_adapter`` folded in; None:
    the base weights).
    """
    if base_model:
        base, prepare = base_model, None
    else:
        choice = choose_base_model(settings)
        base, prepare = choice.model, choice.prepare
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
            cpu_cores=settings.vllm_cpu_cores,
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
    """The generator and its ``EngineHost``.

    In merged mode with ENABLE_LORA the host also gets a LoRA engine, started on demand.
    """
    engine = engine or build_engine(settings, base_model=base_model, kind=kind, mode=mode)
    build_lora_engine = None
    if mode == "merged" and settings.enable_lora:

        def build_lora_engine() -> Engine:
            return build_engine(settings, base_model=base_model, kind=kind, mode="lora")

    engines = EngineHost(engine, warmup=settings.warmup, build_lora_engine=build_lora_engine)
    return PlanGenerator.from_settings(engines, settings)
