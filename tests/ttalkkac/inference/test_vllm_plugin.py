"""``ttalkkac.inference.vllm_plugin``: vLLM's compile cache loads on the CPU, and changes nothing.

vLLM 0.32 saved the compiled model on the CPU but could not load it back, so every engine start
compiled again (see the module). The slow test starts a compiled engine on the tiny model twice
with an empty compile cache: the second start loads the saved compilation (vLLM's log says so)
and answers token for token what the freshly compiled one answered.
"""

from __future__ import annotations

import asyncio
import types
from pathlib import Path

import pytest
import torch

from ttalkkac.inference import vllm_plugin
from ttalkkac.inference.base import EngineRequest
from ttalkkac.prompts import render_prompt

MEETING = (
    "[00:01] Speaker_A: 리모컨 디자인을 논의하겠습니다. [00:05] Speaker_B: 예산은 2천만 원입니다."
)


def loaded_with(compiled_fn: object) -> types.SimpleNamespace:
    """What torch.compiler.load_compiled_function returns, as far as the plugin looks."""
    return types.SimpleNamespace(_artifacts=types.SimpleNamespace(compiled_fn=compiled_fn))


def test_a_plain_compiled_function_gets_a_no_op_finalize_and_others_are_left_alone() -> None:
    def plain(*args):  # torch's own inductor artifact: a function
        return args

    vllm_plugin.add_missing_finalize(loaded_with(plain))
    assert plain.finalize_loading(object()) is None and plain(1) == (1,)

    calls = []

    class VllmArtifact:  # vLLM's own backend's artifact has the method: it must still run
        def finalize_loading(self, config):
            calls.append(config)

    own = VllmArtifact()
    vllm_plugin.add_missing_finalize(loaded_with(own))
    own.finalize_loading("config")
    assert calls == ["config"]
    vllm_plugin.add_missing_finalize(types.SimpleNamespace())  # nothing to patch: no error


def test_register_wraps_torchs_loader_once(monkeypatch: pytest.MonkeyPatch) -> None:
    def plain():
        return None

    def fake_loader(*args, **kwargs):
        return loaded_with(plain)

    monkeypatch.setattr(torch.compiler, "load_compiled_function", fake_loader)
    vllm_plugin.register()
    wrapped = torch.compiler.load_compiled_function
    assert wrapped is not fake_loader
    vllm_plugin.register()  # every vLLM process calls it; a second call must not wrap again
    assert torch.compiler.load_compiled_function is wrapped
    loaded = wrapped("file")
    assert hasattr(loaded._artifacts.compiled_fn, "finalize_loading")


def test_vllm_registers_the_plugin() -> None:
    from importlib.metadata import entry_points

    plugins = {e.name: e.value for e in entry_points(group="vllm.general_plugins")}
    assert plugins["ttalkkac_compile_cache"] == "ttalkkac.inference.vllm_plugin:register"


@pytest.mark.slow
def test_a_restarted_compiled_engine_loads_its_compilation_and_answers_the_same(
    terse_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from ttalkkac.inference.vllm_engine import VllmEngine

    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path / "vllm-cache"))
    # vLLM's INFO lines say what the cache did (importing TRL earlier set this to ERROR).
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "INFO")

    async def start_answer_stop() -> str:
        engine = VllmEngine(str(terse_model_dir), max_model_len=2048, enable_lora=False)
        await engine.start()
        try:
            ids = engine.tokenizer.encode(
                render_prompt(engine.tokenizer, MEETING), add_special_tokens=False
            )
            result = await engine.generate(
                EngineRequest(ids, max_tokens=32, temperature=0.0, seed=0)
            )
            return result.text
        finally:
            await engine.stop()

    fresh = asyncio.run(start_answer_stop())
    first_log = capfd.readouterr()
    assert "saved AOT compiled function" in first_log.out + first_log.err
    restarted = asyncio.run(start_answer_stop())
    log = capfd.readouterr()
    log_text = log.out + log.err
    assert "Compiling model again" not in log_text, log_text[-3000:]
    assert "Directly load AOT compilation" in log_text, log_text[-3000:]
    assert restarted == fresh and fresh
