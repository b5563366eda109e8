"""A real MLflow tracking server for the tests: ``mlflow server`` on a free port, SQLite store.

Started from the test environment's own Python (mlflow-skinny plus Flask, flask-cors and
alembic, the dev extra), in its own process group so that stopping it stops uvicorn's worker
too. Only the tracking API is served (the skinny package has no UI).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.utils.api_process import free_port

START_TIMEOUT_S = 90


@contextmanager
def mlflow_server(root: Path) -> Iterator[str]:
    """The tracking URI of a server whose store and artifacts live under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = (root / "server.log").open("wb")
    env = {
        **os.environ,
        # Its job runner (huey) is for GenAI features we do not use, and not installed.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--default-artifact-root",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited ({process.returncode}): "
                    + (root / "server.log").read_text(errors="replace")[-3000:]
                )
            try:
                if httpx.get(f"{uri}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not answer within {START_TIMEOUT_S} s")
            time.sleep(0.5)
        yield uri
    finally:
        # The server's own process group: the CLI and the uvicorn process it started.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever did not stop
        process.wait(timeout=10)
        log.close()
