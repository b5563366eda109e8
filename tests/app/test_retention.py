"""``DELETE /datasets/{id}``, ``/train/{id}``, ``/adapters/{name}`` over HTTP (no worker, no
engine: jobs are moved through the store), and the start-up sweep of the API's lifespan."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.utils.training_data import tiny_gold_zip
from ttalkkac import jobs
from ttalkkac.settings import Settings
from ttalkkac.store import crud, outbox
from ttalkkac.store.hooks import Subject
from ttalkkac.store.models import WebhookDelivery
from ttalkkac.training.spec import TrainSpec

KEY = "retention-test-key"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", serving_enabled=False, warmup=False, api_keys=[KEY])


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    from app.main import create_app

    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c


def upload(client: TestClient, tmp_path: Path) -> str:
    archive = tiny_gold_zip(tmp_path / "zip", n=4, score=8.0)
    response = client.post("/datasets", files={"file": ("gold.zip", archive.read_bytes())})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def queue_job(client: TestClient, dataset_id: str) -> str:
    """A queued job, as POST /train commits it (without sending it to a broker)."""
    with client.app.state.db.session() as s:  # type: ignore[attr-defined]
        return jobs.create_job(s, dataset_id=dataset_id, spec=TrainSpec(max_steps=1)).id


def move(client: TestClient, job_id: str, to_status: str) -> None:
    with client.app.state.db.session() as s:  # type: ignore[attr-defined]
        assert crud.transition_job(
            s, id=job_id, from_statuses=["queued", "running"], to_status=to_status
        )


def assert_envelope(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and error["request_id"]
    return error


def test_delete_dataset(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    dataset_id = upload(client, tmp_path)
    job_id = queue_job(client, dataset_id)

    error = assert_envelope(client.delete(f"/datasets/{dataset_id}"), 409, "conflict")
    assert error["detail"] == {"jobs": [job_id], "evaluations": []}
    assert (settings.datasets_dir / dataset_id).is_dir()

    assert client.post(f"/train/{job_id}/cancel").json()["status"] == "cancelled"
    response = client.delete(f"/datasets/{dataset_id}")
    assert response.status_code == 204 and response.content == b""
    assert not (settings.datasets_dir / dataset_id).exists()
    assert_envelope(client.get(f"/datasets/{dataset_id}"), 404, "not_found")
    assert client.get("/datasets").json() == {"data": [], "count": 0}
    assert client.get(f"/train/{job_id}").json()["dataset_id"] == dataset_id  # history stays
    assert_envelope(client.delete(f"/datasets/{dataset_id}"), 404, "not_found")
    # A job on the deleted dataset is refused like one on an unknown dataset.
    response = client.post("/train", json={"dataset_id": dataset_id})
    assert_envelope(response, 404, "not_found")


def test_delete_job(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    dataset_id = upload(client, tmp_path)
    job_id = queue_job(client, dataset_id)
    folder = jobs.job_dir(settings, job_id)
    (folder / "checkpoints" / "checkpoint-1").mkdir(parents=True)

    for status in ("queued", "running"):
        if status == "running":
            move(client, job_id, "running")
        error = assert_envelope(client.delete(f"/train/{job_id}"), 409, "conflict")
        assert error["detail"] == {"status": status}
    assert folder.is_dir()

    move(client, job_id, "failed")
    assert client.delete(f"/train/{job_id}").status_code == 204
    assert not folder.exists()
    assert_envelope(client.get(f"/train/{job_id}"), 404, "not_found")
    assert_envelope(client.get(f"/train/{job_id}/events"), 404, "not_found")
    assert_envelope(client.delete(f"/train/{job_id}"), 404, "not_found")
    assert client.get("/train").json()["count"] == 0


def test_deleting_a_job_keeps_only_its_pending_webhook_deliveries(
    client: TestClient, tmp_path: Path
) -> None:
    job_id = queue_job(client, upload(client, tmp_path))
    move(client, job_id, "failed")
    db = client.app.state.db  # type: ignore[attr-defined]
    with db.session() as s:
        for id, state in [("whd_sent", "delivered"), ("whd_due", "pending")]:
            outbox.add(
                s,
                id=id,
                subject=Subject.training_job,
                subject_id=job_id,
                event="training_job.failed",
                url="https://hooks.example.com/ttalkkac",
                client_url=False,
                body=b"{}",
                now=crud.store_now(s),
            )
            s.get(WebhookDelivery, id).state = state

    assert client.delete(f"/train/{job_id}").status_code == 204
    with db.session() as s:
        left = outbox.list_deliveries(s, subject=Subject.training_job, subject_id=job_id)
    # The receiver is still told the job ended; what was already told is gone with the job.
    assert [d.id for d in left] == ["whd_due"]


def test_delete_adapter_then_its_job(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    dataset_id = upload(client, tmp_path)
    job_id = queue_job(client, dataset_id)
    move(client, job_id, "succeeded")
    folder = jobs.job_dir(settings, job_id)
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text('{"r": 8}')
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    merged = folder.with_name(f"{job_id}.merged")
    merged.mkdir()
    name = f"tiny-{job_id}"
    db = client.app.state.db  # type: ignore[attr-defined]
    with db.session() as s:
        crud.create_adapter(s, name=name, base_model="m", path=str(folder), job_id=job_id, rank=8)
        crud.activate_adapter(s, name=name)

    error = assert_envelope(client.delete(f"/adapters/{name}"), 409, "conflict")
    assert "active" in error["message"]
    error = assert_envelope(client.delete(f"/train/{job_id}"), 409, "conflict")
    assert error["detail"] == {"adapter": name}

    with db.session() as s:
        crud.deactivate_adapters(s)
    assert client.delete(f"/adapters/{name}").status_code == 204
    assert not merged.exists() and folder.is_dir()  # the folder is the job's
    with db.session() as s:
        assert crud.get_adapter(s, name=name) is None
    assert_envelope(client.delete(f"/adapters/{name}"), 404, "not_found")
    assert_envelope(client.delete("/adapters/base"), 422, "invalid_input")

    assert client.delete(f"/train/{job_id}").status_code == 204
    assert not folder.exists()


def test_deletes_need_a_key(client: TestClient, tmp_path: Path) -> None:
    dataset_id = upload(client, tmp_path)
    for path in (f"/datasets/{dataset_id}", "/train/job_x", "/adapters/x"):
        response = client.delete(path, headers={"Authorization": "Bearer wrong"})
        assert_envelope(response, 401, "http_error")
    assert client.get(f"/datasets/{dataset_id}").status_code == 200


def test_start_up_sweeps_leftovers_and_ended_checkpoints(settings: Settings) -> None:
    from app.main import create_app
    from ttalkkac.store.db import Database

    settings.ensure_dirs()
    db = Database(settings.resolved_database_url)
    db.create_all()
    with db.session() as s:
        dataset = crud.create_dataset(s, name="d", kind="gold", path="/nowhere")
        job_id = jobs.create_job(s, dataset_id=dataset.id, spec=TrainSpec(max_steps=1)).id
        crud.transition_job(s, id=job_id, from_statuses=["queued"], to_status="cancelled")
    db.dispose()
    checkpoints = jobs.job_dir(settings, job_id) / "checkpoints"
    checkpoints.mkdir(parents=True)
    crashed = settings.datasets_dir / ".incoming-ds_crashed"
    crashed.mkdir()
    stamp = time.time() - 2 * settings.leftover_min_age_s
    os.utime(crashed, (stamp, stamp))
    fresh = settings.datasets_dir / ".incoming-ds_fresh"  # maybe another replica's upload
    fresh.mkdir()

    with TestClient(create_app(settings)) as c:
        assert c.get("/health").status_code == 200
    assert not checkpoints.exists() and not crashed.exists()
    assert fresh.is_dir()


def test_a_dataset_deleted_while_a_job_is_created_is_404_not_500(
    client: TestClient, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DELETE /datasets/{id} lands between POST /train's checks and its insert."""
    import app.routers.train as train_route
    from ttalkkac import retention

    dataset_id = upload(client, tmp_path)
    real_check = train_route.check_filter

    def check_then_lose_the_race(dataset, spec):  # the concurrent DELETE happens here
        real_check(dataset, spec)
        retention.delete_dataset(client.app.state.db, settings, id=dataset_id)

    monkeypatch.setattr(train_route, "check_filter", check_then_lose_the_race)
    error = assert_envelope(
        client.post("/train", json={"dataset_id": dataset_id}), 404, "not_found"
    )
    assert "was deleted while the job was being created" in error["message"]
    assert client.get("/train").json()["count"] == 0  # no job row left behind
