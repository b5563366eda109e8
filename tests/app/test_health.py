"""GET /health, /ready, /metrics."""

from __future__ import annotations

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
