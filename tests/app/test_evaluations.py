"""``/evaluations`` and the activation gate, on the transformers engine (tiny model) in the app.

The app's own evaluation runner runs the evaluations through its serving engine; the tests use
only HTTP, as a user would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.utils.serving import register_adapter, wait_ready
from tests.utils.training_data import tiny_gold_zip
from ttalkkac.plan import ProjectPlan

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(serving_settings, tiny_adapters, tmp_path_factory) -> Iterator[TestClient]:
    settings = serving_settings.model_copy(
        update={
            "serving_engine": "transformers",
            "data_dir": tmp_path_factory.mktemp("eval-app"),
            "max_waiting_requests": 16,
            "eval_poll_s": 0.2,
            "eval_concurrency": 3,
        }
    )
    settings.ensure_dirs()
    register_adapter(settings, "eval-tiny", tiny_adapters[0], base_model=settings.base_model)
    with TestClient(create_app(settings)) as client:
        assert wait_ready(client, timeout_s=120)["ready"]
        yield client


@pytest.fixture(scope="module")
def dataset_id(client: TestClient, tmp_path_factory) -> str:
    archive = tiny_gold_zip(tmp_path_factory.mktemp("eval-gold"), n=6)
    response = client.post("/datasets", files={"file": ("gold.zip", archive.read_bytes())})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def wait_done(client: TestClient, evaluation_id: str, timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        body = client.get(f"/evaluations/{evaluation_id}").json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.3)


def evaluate(client: TestClient, dataset_id: str, adapter: str) -> dict:
    response = client.post(
        "/evaluations",
        json={"adapter": adapter, "dataset_id": dataset_id, "split": "all", "max_samples": 3},
    )
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    return wait_done(client, response.json()["id"])


def test_an_evaluation_runs_in_the_service_and_reports(client: TestClient, dataset_id) -> None:
    body = evaluate(client, dataset_id, "base")
    assert body["status"] == "succeeded", body
    assert body["progress"] == {"step": 3, "total_steps": 3, "epoch": None}
    assert len(body["rows"]) == 3
    for row in body["rows"]:
        ProjectPlan.model_validate(row["plan"])
        assert row["latency_ms"] > 0 and row["completion_tokens"] > 0
    summary = body["summary"]
    assert summary["valid_rate"] == 1.0 and summary["n"] == 3
    assert 0 <= summary["field_chrf"] <= 100 and 0 <= summary["grounding"] <= 1
    assert summary["generic_floor"] is not None

    listing = client.get("/evaluations", params={"limit": 1}).json()
    assert listing["count"] >= 1 and len(listing["data"]) == 1
    assert listing["data"][0]["rows"] is None  # the listing stays small

    report = client.get(f"/evaluations/{body['id']}/report.md")
    assert report.status_code == 200
    assert report.headers["content-type"].startswith("text/markdown")
    assert f"{summary['field_chrf']:.1f}" in report.text and "generic floor" in report.text
    plot = client.get(f"/evaluations/{body['id']}/scores.png")
    assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")

    again = client.post(f"/evaluations/{body['id']}/cancel")
    assert again.status_code == 409 and "already succeeded" in again.json()["error"]["message"]


def test_the_adapter_carries_its_scores_and_the_gate_compares_them(
    client: TestClient, dataset_id
) -> None:
    base = evaluate(client, dataset_id, "base")
    mine = evaluate(client, dataset_id, "eval-tiny")
    assert mine["status"] == "succeeded", mine
    adapters = {a["name"]: a for a in client.get("/adapters").json()["data"]}
    scores = adapters["eval-tiny"]["evaluation"]
    assert scores["evaluation_id"] == mine["id"]
    assert scores["field_chrf"] == mine["summary"]["field_chrf"]

    gate = client.post("/adapters/eval-tiny/activate", params={"require_better": "true"})
    worse = mine["summary"]["field_chrf"] < base["summary"]["field_chrf"]
    if worse:
        assert gate.status_code == 409, gate.text
        message = gate.json()["error"]["message"]
        assert f"{mine['summary']['field_chrf']:.2f}" in message
        assert f"{base['summary']['field_chrf']:.2f}" in message
        assert client.get("/adapters").json()["active"] is None
    else:
        assert gate.status_code == 200, gate.text
        assert client.get("/adapters").json()["active"] == "eval-tiny"
    client.delete("/adapters/active")


def test_invalid_requests_are_refused_with_the_envelope(client: TestClient, dataset_id) -> None:
    bad = [
        ({"adapter": "base", "dataset_id": dataset_id, "max_samples": 0}, 422),
        ({"adapter": "base", "dataset_id": dataset_id, "split": "test"}, 422),
        ({"adapter": "../etc", "dataset_id": dataset_id}, 422),
        ({"adapter": "base", "dataset_id": dataset_id, "surprise": 1}, 422),
        ({"adapter": "base", "dataset_id": "ds_missing"}, 404),
        ({"adapter": "nope", "dataset_id": dataset_id}, 404),
    ]
    for body, status in bad:
        response = client.post("/evaluations", json=body)
        assert response.status_code == status, (body, response.text)
        assert "error" in response.json()
    assert client.get("/evaluations/ev_missing").status_code == 404
    assert client.get("/evaluations", params={"limit": 0}).status_code == 422
