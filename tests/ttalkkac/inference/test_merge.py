"""Merged weights: the same model as base + adapter, exactly; cached and rebuilt on change."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ttalkkac.adapters import ref_from_dir
from ttalkkac.inference.merge import ensure_merged, merged_dir_for, read_stamp

TEXT = "[00:01] Speaker_A: 다음 주까지 시장 조사를 마치겠습니다."


@pytest.fixture
def adapters(tiny_adapters: list[Path], tmp_path: Path) -> list[Path]:
    """Private copies: merged folders are written next to the adapter."""
    return [shutil.copytree(src, tmp_path / f"adapter-{i}") for i, src in enumerate(tiny_adapters)]


def logits(model_dir: Path, tokenizer_dir: Path, adapter: Path | None = None):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    ids = AutoTokenizer.from_pretrained(tokenizer_dir)(TEXT, return_tensors="pt").input_ids
    with torch.inference_mode():
        return model(ids).logits


def close(a, b) -> bool:
    import torch

    return torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_merged_folder_is_base_plus_adapter(terse_model_dir: Path, adapters: list[Path]) -> None:
    ref = ref_from_dir(adapters[0], name="a")
    out = ensure_merged(str(terse_model_dir), ref)
    assert out == merged_dir_for(ref) == adapters[0].parent / "adapter-0.merged"
    assert (out / "config.json").is_file() and (out / "tokenizer_config.json").is_file()
    assert list(out.glob("*.safetensors")) and not list(out.glob("*.bin"))
    assert read_stamp(out)["adapter"] == "a"
    expected = logits(terse_model_dir, terse_model_dir, adapters[0])
    assert close(logits(out, out), expected)
    assert not close(logits(terse_model_dir, terse_model_dir), expected)  # the adapter matters


def test_merged_folder_is_reused_and_rebuilt_when_the_adapter_changes(
    terse_model_dir: Path, adapters: list[Path]
) -> None:
    ref = ref_from_dir(adapters[0], name="a")
    out = ensure_merged(str(terse_model_dir), ref)
    weights = next(out.glob("*.safetensors"))
    built = weights.stat().st_mtime_ns
    assert ensure_merged(str(terse_model_dir), ref_from_dir(adapters[0], name="a")) == out
    assert weights.stat().st_mtime_ns == built  # reused, not rewritten

    # The adapter is retrained in place: other weights, same folder.
    shutil.copy(
        adapters[1] / "adapter_model.safetensors", adapters[0] / "adapter_model.safetensors"
    )
    ensure_merged(str(terse_model_dir), ref_from_dir(adapters[0], name="a"))
    assert next(out.glob("*.safetensors")).stat().st_mtime_ns != built
    assert close(logits(out, out), logits(terse_model_dir, terse_model_dir, adapters[1]))
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
