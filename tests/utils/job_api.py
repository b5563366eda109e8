"""Training jobs over HTTP, for the tests that run them on a real worker: submit, poll, read."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

TERMINAL = {"succeeded", "failed", "cancelled"}
FAST = {
    "gradient_accumulation_steps": 1,
    "learning_rate": 1e-2,
    "logging_steps": 1,
    "max_seq_len": 512,
    "min_quality": 7.0,
    "val_fraction": 0.34,
}


def submit(client: TestClient, dataset_id: str, **hyper: Any) -> dict[str, Any]:
    response = client.post(
        "/train", json={"dataset_id": dataset_id, "hyperparameters": {**FAST, **hyper}}
    )
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    return response.json()


def wait_for(
    client: TestClient,
    job_id: str,
    until: Callable[[dict[str, Any]], bool],
    *,
    timeout_s: float = 120,
    what: str = "",
    log: Path | None = None,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/train/{job_id}").json()
        if until(job):
            return job
        time.sleep(0.3)
    events = client.get(f"/train/{job_id}/events").json()["data"]
    tail = log.read_text(errors="replace")[-4000:] if log else ""
    raise AssertionError(
        f"timed out waiting for {what}: {job}\n{[e['message'] for e in events]}\n{tail}"
    )


def events(client: TestClient, job_id: str, after: int = 0) -> list[dict[str, Any]]:
    response = client.get(f"/train/{job_id}/events", params={"after": after})
    assert response.status_code == 200
    return response.json()["data"]
