"""A real ``ttalkkac api`` process on a free loopback port, for tests that kill or restart it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.log = log.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ttalkkac.cli.main", "api", "--port", str(self.port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 120, *, path: str = "/ready") -> None:
        """Until ``path`` answers 200 (``/health`` for an API that serves no engine)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "the API exited"
            try:
                if httpx.get(f"{self.url}{path}", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError("the API did not become ready")

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


def tiny_api_env(data_dir: Path, base_model: Path) -> dict[str, str]:
    """The API on the transformers engine and the tiny model, fast recovery settings."""
    return {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": f"sqlite:///{data_dir / 'ttalkkac.db'}",
        "BASE_MODEL": str(base_model),
        "SERVING_ENGINE": "transformers",
        "SERVING_MODE": "lora",
        "MAX_MODEL_LEN": "2048",
        "DEFAULT_MAX_TOKENS": "256",
        "WARMUP": "false",
        "EVAL_POLL_S": "0.2",
        "EVAL_CONCURRENCY": "1",
        "JOB_HEARTBEAT_S": "1",
        "JOB_STALE_AFTER_S": "5",
        "API_KEYS": "",
        "HF_HUB_OFFLINE": "1",
    }
