"""The README's newcomer path, end to end: ``scripts/smoke.py`` drives the real launcher, API,
vLLM engine, Celery worker and trainer on the tiny Qwen3, with the embedded SQLite broker (the
path a machine without Redis takes; the Redis path is what the training tests run).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_smoke_newcomer_path(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "smoke.py"),
            "--model",
            "tiny",
            "--broker",
            "embedded",
            "--json-out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=1400,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-8000:]
    summary = json.loads(out.read_text())
    assert summary["ok"] is True
    assert summary["job"]["status"] == "succeeded"
    assert summary["adapter"]
    assert summary["plan_project_name"] is not None
    assert summary["processes_while_running"] >= 2  # at least the API and the worker
    assert summary["left_running"] == []
    assert summary["launcher_exit_code"] == 0
