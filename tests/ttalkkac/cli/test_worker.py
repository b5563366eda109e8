"""``ttalkkac worker``: everything it prints, Celery's banner included, goes to stderr."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def test_worker_leaves_stdout_empty(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "data"),
        # The embedded broker: a queue of this test's own, nothing shared touched.
        "REDIS_URL": f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
    }
    out_path, err_path = tmp_path / "stdout", tmp_path / "stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        worker = subprocess.Popen(
            [sys.executable, "-m", "ttalkkac.cli.main", "worker"],
            stdout=out, stderr=err, env=env, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while " ready." not in err_path.read_text(errors="replace"):
            assert worker.poll() is None, err_path.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "worker not ready"
            time.sleep(0.2)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
    stderr = err_path.read_text(errors="replace")
    assert "[queues]" in stderr  # Celery's banner, which it writes to sys.__stdout__
    assert out_path.read_text() == ""
