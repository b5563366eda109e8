"""``POST /evaluations`` with a ``webhook_url``: checked at the edge, told when the evaluation
ends (signed, to it and to WEBHOOK_URLS), each attempt shown by ``GET /evaluations/{id}``.

No engine here: the evaluations are ended through ``store.transition_evaluation``, the one
place every status change of an evaluation goes through (the runner's included), or through
``POST /evaluations/{id}/cancel``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from tests.utils.training_data import tiny_gold_zip
from tests.utils.webhook_receiver import SECRET, Receiver
from ttalkkac import webhooks
from ttalkkac.evaluation.run import summarize
from ttalkkac.settings import Settings
from ttalkkac.store import evaluations as store
from ttalkkac.store.models import JobStatus, utcnow


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def app_settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(data_dir=tmp_path / "data", serving_enabled=False, warmup=False, **kw)


def hook_settings(tmp_path: Path, receiver: Receiver, **kw: object) -> Settings:
    return app_settings(
        tmp_path,
        webhook_secret=SecretStr(SECRET),
        webhook_urls=[f"{receiver.url}/all"],
        webhook_backoff_s=0.25,
        webhook_max_attempts=3,
        **kw,
    )


def upload(client: TestClient, tmp_path: Path) -> str:
    archive = tiny_gold_zip(tmp_path / "gold", n=4)
    response = client.post("/datasets", files={"file": ("gold.zip", archive.read_bytes())})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def submit(client: TestClient, dataset_id: str, webhook_url: str) -> dict:
    return client.post(
        "/evaluations",
        json={"adapter": "base", "dataset_id": dataset_id, "webhook_url": webhook_url},
    )


def test_a_webhook_url_needs_a_secret_and_a_public_address(
    tmp_path: Path, receiver: Receiver
) -> None:
    from app.main import create_app

    with TestClient(create_app(app_settings(tmp_path))) as client:
        dataset_id = upload(client, tmp_path)
        response = submit(client, dataset_id, "https://ci.example.com/hook")
        assert response.status_code == 409, response.text
        assert "WEBHOOK_SECRET" in response.json()["error"]["message"]
        assert submit(client, dataset_id, "ftp://ci.example.com/hook").status_code == 422
        assert client.get("/evaluations").json()["count"] == 0

    with TestClient(create_app(hook_settings(tmp_path, receiver))) as client:
        for url in ("http://127.0.0.1:8080/hook", "http://169.254.169.254/latest/meta-data"):
            response = submit(client, dataset_id, url)
            assert response.status_code == 422, response.text
            assert "not a public address" in response.json()["error"]["message"]
        assert client.get("/evaluations").json()["count"] == 0

    allowed = hook_settings(tmp_path, receiver, webhook_allow_private=True)
    with TestClient(create_app(allowed)) as client:
        response = submit(client, dataset_id, f"{receiver.url}/mine?token=t0ken")
        assert response.status_code == 202, response.text
        assert "t0ken" not in response.text


def test_an_ended_evaluation_is_told_and_shows_its_attempts(
    tmp_path: Path, receiver: Receiver
) -> None:
    from app.main import create_app

    settings = hook_settings(tmp_path, receiver, webhook_allow_private=True)
    with TestClient(create_app(settings)) as client:
        dataset_id = upload(client, tmp_path)
        done = submit(client, dataset_id, f"{receiver.url}/mine?token=t0ken").json()["id"]
        db = client.app.state.db
        with db.session() as session:  # as the runner does: claimed, then finished
            assert store.transition_evaluation(
                session,
                id=done,
                from_statuses=[JobStatus.queued],
                to_status=JobStatus.running,
                owner="test",
            )
        assert webhooks.drain(5) and receiver.requests == []  # not ended: nothing to tell
        # The first attempt to its own URL fails, the retry is delivered.
        receiver.path_statuses["/mine?token=t0ken"] = [500]
        summary = {**summarize([]), "n": 4, "field_chrf": 12.5, "valid_rate": 1.0}
        with db.session() as session:
            assert store.transition_evaluation(
                session,
                id=done,
                from_statuses=[JobStatus.running],
                to_status=JobStatus.succeeded,
                summary=summary,
                done=4,
                finished_at=utcnow(),
            )
        assert webhooks.drain(10)
        told = [json.loads(r["body"]) for r in receiver.requests]
        assert sorted(r["path"] for r in receiver.requests) == [
            "/all",
            "/mine?token=t0ken",
            "/mine?token=t0ken",
        ]
        for request, payload in zip(receiver.requests, told, strict=True):
            assert webhooks.verify(
                SECRET, request["headers"]["Ttalkkac-Signature"], request["body"]
            )
            assert payload["type"] == request["headers"]["Ttalkkac-Event"]
            assert payload["type"] == "evaluation.succeeded"
            assert payload["id"] == request["headers"]["Ttalkkac-Delivery"]
            evaluation = payload["data"]["evaluation"]
            assert evaluation["id"] == done and evaluation["status"] == "succeeded"
            assert evaluation["summary"] == summary and evaluation["finished_at"]
            assert evaluation["adapter"] == "base" and evaluation["dataset_id"] == dataset_id

        body = client.get(f"/evaluations/{done}").json()
        attempts = body["webhooks"]
        assert "t0ken" not in json.dumps(body)
        mine = [a for a in attempts if a["url"].endswith("/mine")]
        assert [(a["attempt"], a["status"], a["delivered"]) for a in mine] == [
            (1, 500, False),
            (2, 200, True),
        ]
        assert len({a["delivery"] for a in mine}) == 1
        assert [a["delivered"] for a in attempts if a["url"].endswith("/all")] == [True]
        assert all(a["event"] == "evaluation.succeeded" and a["at"] for a in attempts)
        # The list does not carry them: GET /evaluations/{id} only.
        assert client.get("/evaluations").json()["data"][0]["webhooks"] is None

        # A queued evaluation cancelled by the API is told too.
        receiver.requests.clear()
        cancelled = submit(client, dataset_id, f"{receiver.url}/mine").json()["id"]
        assert client.post(f"/evaluations/{cancelled}/cancel").json()["status"] == "cancelled"
        assert webhooks.drain(10)
        assert sorted(r["path"] for r in receiver.requests) == ["/all", "/mine"]
        assert {json.loads(r["body"])["type"] for r in receiver.requests} == {
            "evaluation.cancelled"
        }
        shown = client.get(f"/evaluations/{cancelled}").json()["webhooks"]
        assert len(shown) == 2 and all(a["delivered"] for a in shown)
