"""``ttalkkac generate`` in-process (transformers engine, tiny model), and once as a real process
on vLLM for what it writes to stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttalkkac.cli.main import app
from ttalkkac.plan import ProjectPlan


@pytest.fixture
def cli_env(monkeypatch, tmp_path: Path) -> None:
    from ttalkkac.settings import get_settings

    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DEFAULT_MAX_TOKENS", "256")
    monkeypatch.setenv("MAX_MODEL_LEN", "2048")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def run(*args: str):
    return CliRunner().invoke(app, ["generate", *args], catch_exceptions=False)


def test_json_utterances_with_adapter_folder(cli_env, tmp_path, terse_model_dir, tiny_adapters):
    meeting = tmp_path / "meeting.json"
    meeting.write_text(
        json.dumps([{"timestamp": "00:01", "speaker": "A", "text": "리모컨을 논의합니다."}]),
        encoding="utf-8",
    )
    result = run(
        "--meeting", str(meeting), "--engine", "transformers",
        "--base-model", str(terse_model_dir), "--adapter", str(tiny_adapters[0]),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ProjectPlan.model_validate(json.loads(result.stdout))
    assert f"adapter={tiny_adapters[0].name}" in result.stderr


def test_markdown_from_plain_text(cli_env, tmp_path, terse_model_dir) -> None:
    meeting = tmp_path / "meeting.txt"
    meeting.write_text("[00:01] Alice: I will write the spec.\n", encoding="utf-8")
    result = run(
        "--meeting", str(meeting), "--engine", "transformers",
        "--base-model", str(terse_model_dir), "--format", "markdown",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# ") and "## 핵심 목표" in result.stdout
    assert "adapter=base" in result.stderr


def test_errors_exit_nonzero_with_a_message(cli_env, tmp_path, terse_model_dir) -> None:
    missing = run("--meeting", str(tmp_path / "nope.txt"))
    assert missing.exit_code == 2 and "not found" in missing.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    result = run(
        "--meeting", str(empty), "--engine", "transformers", "--base-model", str(terse_model_dir)
    )
    assert result.exit_code == 1 and "empty" in result.stderr


@pytest.mark.slow
def test_vllm_json_on_stdout_is_only_the_plan(tmp_path, terse_model_dir) -> None:
    """`ttalkkac generate --format json > plan.json` in a real process: vLLM (and its engine
    process) log dozens of INFO lines, all of them to stderr."""
    meeting = tmp_path / "meeting.txt"
    meeting.write_text("[00:01] Alice: I will write the spec.\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "VLLM_LOGGING_STREAM"}
    env.update(DATA_DIR=str(tmp_path / "data"), DEFAULT_MAX_TOKENS="256", MAX_MODEL_LEN="2048")
    env["VLLM_LOGGING_LEVEL"] = "INFO"  # importing TRL in this process set it to ERROR
    run = subprocess.run(
        [sys.executable, "-m", "ttalkkac.cli.main", "generate", "--meeting", str(meeting),
         "--engine", "vllm", "--base-model", str(terse_model_dir), "--format", "json"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    ProjectPlan.model_validate(json.loads(run.stdout))
    assert "INFO" in run.stderr and "engine=vllm" in run.stderr, run.stderr[-6000:]
