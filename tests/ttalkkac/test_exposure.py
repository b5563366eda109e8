"""No keys, no network: ``ttalkkac api`` and ``ttalkkac up`` refuse a non-loopback address
without API_KEYS unless ALLOW_UNAUTHENTICATED_NETWORK says it is meant."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ttalkkac.exposure import is_loopback, listen_refusal
from ttalkkac.settings import Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost", "LOCALHOST", "::ffff:127.0.0.1"],
)
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "", "192.168.1.10", "10.0.0.1", "example.com", "localhost.evil.com"]
)
def test_other_addresses(host: str) -> None:
    assert not is_loopback(host)


def test_refusal_names_what_to_set(tmp_path: Path) -> None:
    open_settings = Settings(data_dir=tmp_path)
    message = listen_refusal("0.0.0.0", open_settings)
    assert message is not None
    assert "API_KEYS" in message and "ALLOW_UNAUTHENTICATED_NETWORK=true" in message
    assert listen_refusal("127.0.0.1", open_settings) is None
    assert listen_refusal("0.0.0.0", Settings(data_dir=tmp_path, api_keys="k")) is None
    allowed = Settings(data_dir=tmp_path, allow_unauthenticated_network=True)
    assert listen_refusal("0.0.0.0", allowed) is None


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"API_KEYS", "ALLOW_UNAUTHENTICATED_NETWORK", "DATA_DIR"}
    }
    clean.update(PYTHONPATH=str(REPO), DATA_DIR=str(tmp_path / "data"), **env)
    return subprocess.run(
        [sys.executable, "-m", "ttalkkac.cli.main", *args],
        cwd=tmp_path,  # no .env here
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("command", ["api", "up"])
def test_commands_refuse_the_network_without_keys(tmp_path: Path, command: str) -> None:
    run = _run(tmp_path, command, "--host", "0.0.0.0", "--port", "1")
    assert run.returncode == 2, run.stderr
    assert "refusing to listen on '0.0.0.0' without API keys" in run.stderr
    assert "API_KEYS" in run.stderr and "ALLOW_UNAUTHENTICATED_NETWORK" in run.stderr
    assert run.stdout == ""
    assert not (tmp_path / "data").exists()  # refused before anything was started or written
