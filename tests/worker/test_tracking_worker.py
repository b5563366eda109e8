"""Jobs run by a real Celery worker report to real trackers, and keep their checkpoints.

The API (this process) and a worker process share a PostgreSQL database, a Redis queue of this
run and a local ``mlflow server``; the worker gets ``MLFLOW_TRACKING_URI`` from its
environment, as a deployment gives it.
"""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.utils.training_data import tiny_gold_zip
from tests.worker.conftest import running_worker

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.utils.mlflow_server import mlflow_server

    with mlflow_server(tmp_path_factory.mktemp("mlflow-worker")) as uri:
        yield uri


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model_dir: Path,
    worker_database: str,
    redis_prefix: str,
    run_id: str,
    mlflow_uri: str,
) -> Iterator[TestClient]:
    from app.main import create_app

    with (
        running_worker(
            tmp_path_factory.mktemp("tracking-worker-data"),
            database_url=worker_database,
            redis_prefix=redis_prefix,
            queue=f"test-training-{run_id}-tracking",
            base_model=tiny_model_dir,
            eval_after_training="false",
            mlflow_tracking_uri=mlflow_uri,
            mlflow_experiment=f"ttalkkac-worker-{run_id}",
        ) as setup,
        TestClient(create_app(setup.settings)) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def dataset_id(client: TestClient, tmp_path_factory: pytest.TempPathFactory) -> str:
    archive = tiny_gold_zip(tmp_path_factory.mktemp("zip"), n=4, score=8.0)
    response = client.post("/datasets", files={"file": ("gold.zip", archive.read_bytes())})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def run_job(client: TestClient, dataset_id: str, **hyper: Any) -> str:
    hyperparameters = {"max_steps": 4, "eval_steps": 2, "logging_steps": 1, "max_seq_len": 512}
    response = client.post(
        "/train",
        json={"dataset_id": dataset_id, "hyperparameters": {**hyperparameters, **hyper}},
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    deadline = time.monotonic() + 300
    while (status := client.get(f"/train/{job_id}").json()["status"]) not in (
        "succeeded",
        "failed",
        "cancelled",
    ):
        assert time.monotonic() < deadline, client.get(f"/train/{job_id}/events").json()
        time.sleep(0.5)
    assert status == "succeeded", client.get(f"/train/{job_id}/events").json()
    return job_id


def test_mlflow_run_of_a_worker_job_and_its_kept_checkpoints(
    client: TestClient, dataset_id: str, mlflow_uri: str, run_id: str
) -> None:
    from mlflow import MlflowClient

    job_id = run_job(client, dataset_id, report_to="mlflow", keep_checkpoints=True)

    tracker = MlflowClient(mlflow_uri)
    experiment = tracker.get_experiment_by_name(f"ttalkkac-worker-{run_id}")
    assert experiment is not None
    (run,) = tracker.search_runs(
        [experiment.experiment_id], filter_string=f"attributes.run_name = '{job_id}'"
    )
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in tracker.get_metric_history(run.info.run_id, "loss")) == [
        1,
        2,
        3,
        4,
    ]
    assert [m.step for m in tracker.get_metric_history(run.info.run_id, "eval_loss")] == [2, 4]

    listing = client.get(f"/train/{job_id}/checkpoints").json()
    assert [c["step"] for c in listing["data"]] == [2, 4] and listing["keep_checkpoints"]
    created = client.post(f"/train/{job_id}/checkpoints/2/adapter")
    assert created.status_code == 201, created.text
    download = client.get(f"/adapters/{created.json()['name']}/download")
    assert download.status_code == 200
    assert "adapter_model.safetensors" in zipfile.ZipFile(io.BytesIO(download.content)).namelist()


def test_tensorboard_files_of_a_worker_job(
    client: TestClient, dataset_id: str, tmp_path: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    job_id = run_job(client, dataset_id, report_to="tensorboard")
    download = client.get(f"/train/{job_id}/tensorboard.zip")
    assert download.status_code == 200, download.text
    zipfile.ZipFile(io.BytesIO(download.content)).extractall(tmp_path)
    accumulator = EventAccumulator(str(tmp_path))
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars("train/loss")] == [1, 2, 3, 4]
    # Without keep_checkpoints a succeeded job has none left.
    assert client.get(f"/train/{job_id}/checkpoints").json()["count"] == 0
