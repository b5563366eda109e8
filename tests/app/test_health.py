"""GET /health, /ready, /metrics."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

from fastapi.testclient import TestClient

from app.main import create_app


def test_health_and_ready_without_an_engine(settings) -> None:
    # SERVING_ENABLED=false (the default test settings): alive, never ready, /generate 503.
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").json()["status"] == "ok"
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["state"] == "disabled" and ready.json()["ready"] is False
        response = client.post("/generate", json={"meeting": "hello"})
        assert response.status_code == 503
        assert "SERVING_ENABLED" in response.json()["error"]["message"]


class _FailedEngines:
    """What /ready reads of an engine host whose engine failed to start on a server path."""

    ready = False
    error = "OSError: /srv/secret-models/qwen3/config.json: no such file"
    engine = SimpleNamespace(name="vllm", base_model="/srv/secret-models/qwen3")

    def status(self) -> str:
        return "failed"

    def lora_engine_status(self) -> str:
        return "not started"

    def loaded_adapters(self) -> list[str]:
        return []


class _FailedGenerator:
    """A generator over ``_FailedEngines`` (admission figures only)."""

    engines = _FailedEngines()
    max_waiting_requests = 8

    def waiting(self) -> int:
        return 0


@contextmanager
def failed_engine_client(settings) -> Iterator[TestClient]:
    """An app whose (pretended) engine failed; the stand-in is removed before shutdown."""
    with TestClient(create_app(settings)) as client:
        client.app.state.generator = _FailedGenerator()
        try:
            yield client
        finally:
            client.app.state.generator = None


def test_ready_shows_details_only_with_a_key_when_keys_are_configured(settings) -> None:
    settings.api_keys = ["k1"]
    with failed_engine_client(settings) as client:
        anonymous = client.get("/ready")
        assert anonymous.status_code == 503
        assert anonymous.json() == {"ready": False, "state": "failed"}
        assert "/srv" not in anonymous.text
        keyed = client.get("/ready", headers={"Authorization": "Bearer k1"})
        assert keyed.status_code == 503
        body = keyed.json()
        assert body["base_model"] == "/srv/secret-models/qwen3"
        assert body["error"].startswith("OSError") and body["state"] == "failed"
        # A wrong key is treated as none: the probe still gets its answer, without details.
        assert client.get("/ready", headers={"Authorization": "Bearer nope"}).json() == {
            "ready": False,
            "state": "failed",
        }


def test_ready_without_keys_shows_everything(settings) -> None:
    with failed_engine_client(settings) as client:
        body = client.get("/ready").json()
        assert body["base_model"] == "/srv/secret-models/qwen3" and body["engine"] == "vllm"


def test_ready_reports_the_engine(vllm_client, serving_settings) -> None:
    response = vllm_client.get("/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True and body["state"] == "ready"
    assert body["engine"] == "vllm" and body["mode"] == "lora"
    assert body["base_model"] == serving_settings.base_model
    assert body["max_waiting_requests"] == serving_settings.max_waiting_requests
    assert body["error"] is None


def test_metrics_count_requests_latency_tokens_and_queue_depth(vllm_client) -> None:
    response = vllm_client.post(
        "/generate", json={"meeting": "Bob owns the database.", "adapter": "base"}
    )
    assert response.status_code == 200, response.text
    vllm_client.post("/generate", json={"meeting": "  "})
    text = vllm_client.get("/metrics").text
    lines = text.splitlines()

    def value(prefix: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))

    assert value('ttalkkac_generate_requests_total{engine="vllm",outcome="ok"}') >= 1
    assert value('ttalkkac_generate_seconds_count{engine="vllm"}') >= 1
    assert value('ttalkkac_generated_tokens_total{kind="completion"}') >= 1
    assert value('ttalkkac_generated_tokens_total{kind="prompt"}') >= 50
    assert any(line.startswith("ttalkkac_generate_queue_depth ") for line in lines)
    assert value('ttalkkac_engine_ready{engine="vllm",mode="lora"}') == 1
    assert value('ttalkkac_http_requests_total{method="POST",route="/generate",status="422"}') >= 1
