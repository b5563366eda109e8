"""A job ended by a real Celery worker sends its signed webhooks from the job's own process."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.utils.training_data import tiny_gold_zip
from tests.utils.webhook_receiver import SECRET, Receiver
from tests.worker.conftest import running_worker
from ttalkkac import webhooks

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model_dir: Path,
    worker_database: str,
    redis_prefix: str,
    run_id: str,
    receiver: Receiver,
) -> Iterator[TestClient]:
    from app.main import create_app

    with (
        running_worker(
            tmp_path_factory.mktemp("webhook-worker-data"),
            database_url=worker_database,
            redis_prefix=redis_prefix,
            queue=f"test-training-{run_id}-webhooks",
            base_model=tiny_model_dir,
            webhook_urls=f"{receiver.url}/all-jobs",
            webhook_secret=SECRET,
            webhook_backoff_s="0.2",
            webhook_allow_private="true",  # the receiver listens on 127.0.0.1
            eval_after_training="false",
        ) as setup,
        TestClient(create_app(setup.settings)) as c,
    ):
        yield c


def test_a_job_finished_by_the_worker_is_told(
    client: TestClient, receiver: Receiver, tmp_path: Path
) -> None:
    archive = tiny_gold_zip(tmp_path, n=4, score=8.0)
    dataset = client.post("/datasets", files={"file": ("gold.zip", archive.read_bytes())})
    assert dataset.status_code == 201, dataset.text
    job = client.post(
        "/train",
        json={
            "dataset_id": dataset.json()["id"],
            "webhook_url": f"{receiver.url}/mine?token=t0ken",
            "hyperparameters": {"max_steps": 1, "max_seq_len": 512, "min_quality": 7.0},
        },
    )
    assert job.status_code == 202, job.text
    assert "webhook_url" not in job.json() and "t0ken" not in job.text
    job_id = job.json()["id"]
    deadline = time.monotonic() + 180
    while len(receiver.requests) < 2:
        assert time.monotonic() < deadline, client.get(f"/train/{job_id}/events").json()
        time.sleep(0.3)
    assert client.get(f"/train/{job_id}").json()["status"] == "succeeded"
    assert sorted(r["path"] for r in receiver.requests) == ["/all-jobs", "/mine?token=t0ken"]
    for request in receiver.requests:
        assert webhooks.verify(SECRET, request["headers"]["Ttalkkac-Signature"], request["body"])
        payload = json.loads(request["body"])
        assert payload["type"] == "training_job.succeeded"
        assert payload["data"]["job"]["id"] == job_id and payload["data"]["job"]["adapter_name"]
    time.sleep(1)  # the attempt events are written right after each answer
    messages = [e["message"] for e in client.get(f"/train/{job_id}/events").json()["data"]]
    assert sum("webhook training_job.succeeded delivered" in m for m in messages) == 2
