"""``ttalkkac api``: logs on stderr only, and no access line for the launcher's /ready polls."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ttalkkac.cli.serve import LAUNCHER_READY_PATH, DropLauncherPolls, log_config
from ttalkkac.cli.up import ReadyProbe


def access_record(path: str) -> logging.LogRecord:
    # The record exactly as uvicorn's HTTP protocols log a request.
    return logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:50000", "GET", path, "1.1", 503), None,
    )  # fmt: skip


def test_filter_drops_only_the_launchers_ready_polls() -> None:
    drop = DropLauncherPolls()
    assert not drop.filter(access_record(LAUNCHER_READY_PATH))
    assert drop.filter(access_record("/ready"))  # a load balancer's probe stays visible
    assert drop.filter(access_record("/generate"))
    assert drop.filter(logging.LogRecord("uvicorn.error", logging.INFO, "", 1, "x", None, None))
    config = log_config()
    assert config["loggers"]["uvicorn.access"]["filters"] == ["launcher_polls"]
    assert config["filters"]["launcher_polls"]["()"] is DropLauncherPolls


def test_api_logs_to_stderr_without_the_launchers_polls(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "SERVING_ENABLED": "false"}
    api = subprocess.Popen(
        [sys.executable, "-m", "ttalkkac.cli.main", "api", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:  # ready is never true without an engine: wait for any answer
            try:
                urllib.request.urlopen(f"{base_url}/health", timeout=2).close()
                break
            except OSError:
                assert api.poll() is None and time.monotonic() < deadline, "api did not start"
                time.sleep(0.2)
        probe = ReadyProbe(base_url)
        for _ in range(3):
            assert probe() is False  # 503: SERVING_ENABLED=false
        assert probe.failure is None
    finally:
        api.terminate()
        out, err = api.communicate(timeout=60)
    assert out == ""
    assert '"GET /health HTTP/1.1" 200' in err  # the access log is on, on stderr
    assert "probe=ttalkkac-up" not in err
