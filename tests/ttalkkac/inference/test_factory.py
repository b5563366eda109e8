"""The factory: which dtype, mode and LoRA setting the engines it builds get from the settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttalkkac.inference import factory
from ttalkkac.inference.hf_engine import TransformersEngine
from ttalkkac.inference.vllm_engine import VllmEngine
from ttalkkac.settings import Settings

AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
AVX512_BF16 = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n"
AMX = "processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n"


@pytest.mark.parametrize(
    ("cpuinfo", "native"),
    [(AVX2_ONLY, False), (AVX512_BF16, True), (AMX, True), ("", False)],
)
def test_native_bf16_read_from_cpu_flags(cpuinfo: str, native: bool) -> None:
    assert factory.cpu_has_native_bf16(cpuinfo) is native


def test_auto_dtype_is_float32_where_bf16_would_be_emulated(monkeypatch, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    monkeypatch.setattr(factory, "has_cuda", lambda: False)
    monkeypatch.setattr(factory, "cpu_has_native_bf16", lambda: False)
    assert factory.resolve_serving_dtype(settings) == "float32"
    monkeypatch.setattr(factory, "cpu_has_native_bf16", lambda: True)
    assert factory.resolve_serving_dtype(settings) == "bfloat16"
    # On a GPU: the model's own dtype, which vLLM and transformers read from its config.
    monkeypatch.setattr(factory, "has_cuda", lambda: True)
    assert factory.resolve_serving_dtype(settings) == "auto"


def test_an_explicit_dtype_wins(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(factory, "cpu_has_native_bf16", lambda: True)
    settings = Settings(data_dir=tmp_path, serving_dtype="float32")
    assert factory.resolve_serving_dtype(settings) == "float32"


@pytest.mark.parametrize("kind", ["vllm", "transformers"])
def test_engines_get_the_resolved_dtype_and_lora_by_mode(kind: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, serving_dtype="float32", max_model_len=1024)
    merged = factory.build_engine(settings, base_model="/models/base", kind=kind, mode="merged")
    lora = factory.build_engine(settings, base_model="/models/base", kind=kind, mode="lora")
    assert isinstance(merged, VllmEngine if kind == "vllm" else TransformersEngine)
    assert merged.dtype == lora.dtype == "float32"
    assert (merged.enable_lora, lora.enable_lora) == (False, True)
    assert merged.max_model_len == 1024 and merged.base_model == "/models/base"
