"""The factory: which dtype and LoRA setting the engines it builds get from the settings and mode.

The hardware policy behind the dtype is tested in ``tests/ttalkkac/test_hardware.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ttalkkac.inference import factory
from ttalkkac.inference.hf_engine import TransformersEngine
from ttalkkac.inference.vllm_engine import VllmEngine
from ttalkkac.settings import Settings


@pytest.mark.parametrize("kind", ["vllm", "transformers"])
def test_engines_get_the_resolved_dtype_and_lora_by_mode(kind: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, serving_dtype="float32", max_model_len=1024)
    merged = factory.build_engine(settings, base_model="/models/base", kind=kind, mode="merged")
    lora = factory.build_engine(settings, base_model="/models/base", kind=kind, mode="lora")
    assert isinstance(merged, VllmEngine if kind == "vllm" else TransformersEngine)
    assert merged.dtype == lora.dtype == "float32"
    assert (merged.enable_lora, lora.enable_lora) == (False, True)
    assert merged.max_model_len == 1024 and merged.base_model == "/models/base"
