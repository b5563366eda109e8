"""POST /generate/stream on the shared vLLM app: progress in order, the plan or the envelope, auth,
and a client that goes away stops the engine's work."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterable

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from app.main import create_app
from app.schemas import GenerateResponse
from tests.utils.browser import serve_client_app
from ttalkkac.plan import ProjectPlan
from ttalkkac.render import to_markdown

MEETING = (
    "[00:01] Speaker_A: 오늘 회의에서는 새로운 리모컨 디자인을 논의하겠습니다.\n"
    "[00:02] Speaker_B: 배터리 수명과 가격이 중요합니다. 다음 주까지 시장 조사를 하겠습니다."
)
# Far beyond the test engine's 2,048-token context: several chunks, generated concurrently.
LONG_MEETING = "\n".join(
    f"[{i // 60:02d}:{i % 60:02d}] Speaker_{'ABC'[i % 3]}: 리모컨 디자인과 배터리 수명, "
    f"가격 목표 {i}번 항목을 다음 주까지 검토하겠습니다."
    for i in range(160)
)


def parse(lines: Iterable[str]) -> Iterable[tuple[str, dict]]:
    """(event, data) pairs of a text/event-stream, as they arrive."""
    name = None
    for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield name, json.loads(line.removeprefix("data: "))


def stream(client, body: dict) -> tuple[httpx.Response, list[tuple[str, dict]]]:
    with client.stream("POST", "/generate/stream", json=body) as response:
        if response.status_code != 200:
            response.read()  # the error envelope, for .json()
            return response, []
        return response, list(parse(response.iter_lines()))


def test_progress_arrives_in_order_then_the_validated_plan(vllm_client) -> None:
    response, events = stream(vllm_client, {"meeting": MEETING, "adapter": "base"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    names = [name for name, _ in events]
    assert names[-1] == "plan" and names.count("plan") == 1 and "error" not in names
    progress = [data for name, data in events if name == "progress"]
    kinds = [p["kind"] for p in progress]
    assert kinds[:2] == ["admitted", "planned"] and kinds[-1] == "chunk_done", kinds
    assert "tokens" in kinds  # the answer was seen growing, not only at the end
    assert progress[1]["chunks"] == 1
    tokens = [p["tokens"] for p in progress]
    assert tokens == sorted(tokens)
    done = progress[-1]
    for update in progress:
        if update["kind"] == "tokens" and update["attempt"] == done["attempt"]:
            assert update["chunk"] == 1 and done["text"].startswith(update["text"])

    final = events[-1][1]
    plan = ProjectPlan.model_validate(final["plan"])
    assert done["text"] and ProjectPlan.model_validate_json(done["text"]) == plan
    # /generate's answer, plus the Markdown that ?format=markdown gives.
    assert set(final) == set(GenerateResponse.model_fields) | {"markdown"}
    assert final["markdown"] == to_markdown(plan)
    assert final["usage"]["completion_tokens"] == done["tokens"]
    assert final["engine"] == "vllm" and final["adapter"] is None and final["chunks"] == 1
    assert final["request_id"] == response.headers["X-Request-Id"]


def test_errors_come_as_the_envelope(vllm_client) -> None:
    # Found before the stream starts: the status and envelope /generate answers.
    response, _ = stream(vllm_client, {"meeting": MEETING, "adapter": "no-such-adapter"})
    assert response.status_code == 404
    assert "no-such-adapter" in response.json()["error"]["message"]
    response, _ = stream(vllm_client, {"meeting": "  "})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"

    # Found while generating (cut off at max_tokens twice): the stream's last event.
    response, events = stream(
        vllm_client, {"meeting": MEETING, "adapter": "base", "max_tokens": 16}
    )
    assert response.status_code == 200
    name, last = events[-1]
    assert name == "error" and "plan" not in [n for n, _ in events]
    assert last["status"] == 502
    error = last["error"]
    assert set(error) == {"code", "message", "detail", "request_id"}
    assert error["code"] == "generation_invalid" and "did not validate" in error["message"]
    assert [a["attempt"] for a in error["detail"]["attempts"]] == [1, 2]
    assert error["request_id"] == response.headers["X-Request-Id"]
    assert "retry" in [data["kind"] for n, data in events if n == "progress"]


def test_the_stream_needs_the_api_key(settings) -> None:
    keyed = settings.model_copy(update={"api_keys": ["k1"]})
    with TestClient(create_app(keyed)) as client:
        body = {"meeting": MEETING}
        response = client.post("/generate/stream", json=body)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "http_error"
        # Past the guard: no engine in this app, answered before any event, as /generate does.
        headers = {"Authorization": "Bearer k1"}
        response = client.post("/generate/stream", json=body, headers=headers)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "engine_unavailable"


def cancelled() -> float:
    labels = {"engine": "vllm", "outcome": "cancelled"}
    return REGISTRY.get_sample_value("ttalkkac_generate_requests_total", labels) or 0.0


@pytest.mark.timeout(300)
def test_a_client_that_goes_away_stops_the_engine_work(vllm_client) -> None:
    generator = vllm_client.app.state.generator
    before = cancelled()
    # A real socket: the server learns of the disconnect as it would from a browser.
    with serve_client_app(vllm_client) as url, httpx.Client(base_url=url, timeout=60) as http:
        body = {"meeting": LONG_MEETING, "adapter": "base"}
        with http.stream("POST", "/generate/stream", json=body) as response:
            assert response.status_code == 200
            for name, data in parse(response.iter_lines()):
                assert name == "progress", (name, data)
                if data["kind"] == "tokens":
                    assert data["chunks"] > 1
                    break  # chunks are still being generated: go away now
            assert generator.waiting() == 1 and generator.engine.inflight() > 0
        deadline = time.monotonic() + 10
        while generator.waiting() or generator.engine.inflight():
            assert time.monotonic() < deadline, "the engine kept generating for a gone client"
            time.sleep(0.05)
        assert cancelled() == before + 1
        # The engine serves the next request as usual.
        response = http.post("/generate", json={"meeting": MEETING, "adapter": "base"})
        assert response.status_code == 200, response.text


@pytest.mark.timeout(300)
def test_a_plain_generate_whose_client_goes_away_stops_too(vllm_client) -> None:
    """Not only the stream: /generate awaits the disconnect and cancels its generation."""
    generator = vllm_client.app.state.generator
    before = cancelled()
    with serve_client_app(vllm_client) as url, httpx.Client(base_url=url, timeout=60) as http:
        host, port = url.removeprefix("http://").split(":")
        body = json.dumps({"meeting": LONG_MEETING, "adapter": "base"}).encode()
        # A raw socket, closed the moment the engine is at work: a client that gave up.
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(
                b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            deadline = time.monotonic() + 60
            while not generator.engine.inflight():
                assert time.monotonic() < deadline, "the request never reached the engine"
                time.sleep(0.01)
        deadline = time.monotonic() + 15
        while generator.waiting() or generator.engine.inflight():
            assert time.monotonic() < deadline, "the engine kept generating for a gone client"
            time.sleep(0.05)
        assert cancelled() == before + 1
        response = http.post("/generate", json={"meeting": MEETING, "adapter": "base"})
        assert response.status_code == 200, response.text
