"""The same /generate requests through the transformers + PEFT engine."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.utils.serving import register_adapter, wait_ready
from ttalkkac.plan import ProjectPlan

MEETING = (
    "[00:01] Speaker_A: 리모컨 디자인을 논의하겠습니다.\n[00:02] Speaker_B: 시장 조사를 하겠습니다."
)


@pytest.fixture(scope="module")
def hf_client(serving_settings, tiny_adapters, tmp_path_factory) -> Iterator[TestClient]:
    settings = serving_settings.model_copy(
        update={
            "serving_engine": "transformers",
            "data_dir": tmp_path_factory.mktemp("serving-hf"),
            "max_waiting_requests": 16,
        }
    )
    settings.ensure_dirs()
    register_adapter(settings, "hf-tiny", tiny_adapters[0], base_model=settings.base_model)
    with TestClient(create_app(settings)) as client:
        ready = wait_ready(client, timeout_s=120)
        assert ready["ready"] and ready["engine"] == "transformers", ready
        yield client


def test_same_request_through_transformers(hf_client) -> None:
    response = hf_client.post("/generate", json={"meeting": MEETING, "adapter": "hf-tiny"})
    assert response.status_code == 200, response.text
    body = response.json()
    ProjectPlan.model_validate(body["plan"])
    assert body["engine"] == "transformers" and body["adapter"] == "hf-tiny"
    assert body["usage"]["completion_tokens"] > 0
    assert "hf-tiny" in hf_client.get("/ready").json()["loaded_adapters"]


def test_concurrent_mixed_adapter_requests_are_batched(hf_client) -> None:
    bodies = [
        {"meeting": MEETING, "adapter": "hf-tiny" if i % 2 else "base", "temperature": 0.2}
        for i in range(6)
    ]
    generator = hf_client.app.state.generator
    batches_before = generator.engine.batches
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(lambda b: hf_client.post("/generate", json=b), bodies))
    for body, response in zip(bodies, responses, strict=True):
        assert response.status_code == 200, response.text
        ProjectPlan.model_validate(response.json()["plan"])
        assert response.json()["adapter"] == (None if body["adapter"] == "base" else "hf-tiny")
    # Six requests, both adapters mixed, in fewer generate() calls than requests.
    assert generator.engine.batches - batches_before < 6


def test_markdown_through_transformers(hf_client) -> None:
    response = hf_client.post(
        "/generate",
        json={"meeting": [{"text": "Alice writes the spec."}]},
        params={"format": "markdown"},
    )
    assert response.status_code == 200, response.text
    assert "## 프로젝트 개요" in response.text
