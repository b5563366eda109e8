"""POST /generate on a real vLLM engine (tiny Qwen3 + LoRA adapters, constrained decoding)."""

from __future__ import annotations

import json
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.utils.serving import bin_only_copy, register_adapter
from ttalkkac.plan import ProjectPlan

MEETING = (
    "[00:01] Speaker_A: 오늘 회의에서는 새로운 리모컨 디자인을 논의하겠습니다.\n"
    "[00:02] Speaker_B: 배터리 수명과 가격이 중요합니다. 다음 주까지 시장 조사를 하겠습니다."
)
UTTERANCES = [
    {"timestamp": "00:01", "speaker": "Speaker_A", "text": "리모컨 디자인을 논의하겠습니다."},
    {"timestamp": None, "speaker": "Speaker_B", "text": "다음 주까지 시장 조사를 하겠습니다."},
]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def adapter_name(serving_settings, tiny_adapters: list[Path]) -> str:
    name = unique("tiny")
    register_adapter(
        serving_settings, name, tiny_adapters[0], base_model=serving_settings.base_model
    )
    return name


def post(client, body: dict, **params):
    return client.post("/generate", json=body, params=params)


def assert_plan_response(response, *, adapter: str | None) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    ProjectPlan.model_validate(body["plan"])
    assert body["adapter"] == adapter
    assert body["engine"] == "vllm"
    assert body["chunks"] == 1
    assert body["usage"]["prompt_tokens"] > 50
    assert 0 < body["usage"]["completion_tokens"] <= 256
    assert body["timings"]["generate_ms"] > 0
    return body


def test_plain_text_with_adapter(vllm_client, adapter_name: str) -> None:
    response = post(vllm_client, {"meeting": MEETING, "adapter": adapter_name})
    assert_plan_response(response, adapter=adapter_name)
    assert adapter_name in vllm_client.get("/ready").json()["loaded_adapters"]


def test_utterance_list_with_base_model(vllm_client) -> None:
    response = post(vllm_client, {"meeting": UTTERANCES, "adapter": "base", "temperature": 0})
    body = assert_plan_response(response, adapter=None)
    assert body["base_model"] == vllm_client.app.state.settings.base_model


def test_default_is_the_active_adapter_else_the_base_model(vllm_client, adapter_name) -> None:
    vllm_client.delete("/adapters/active")
    assert_plan_response(post(vllm_client, {"meeting": MEETING}), adapter=None)
    assert vllm_client.post(f"/adapters/{adapter_name}/activate").status_code == 200
    try:
        assert_plan_response(post(vllm_client, {"meeting": MEETING}), adapter=adapter_name)
        # "base" still reaches the base model while an adapter is active.
        base = post(vllm_client, {"meeting": MEETING, "adapter": "base"})
        assert_plan_response(base, adapter=None)
    finally:
        vllm_client.delete("/adapters/active")


def test_adapter_registered_while_running_is_used_without_restart(
    vllm_client, serving_settings, tiny_adapters
) -> None:
    name = unique("late")
    assert post(vllm_client, {"meeting": MEETING, "adapter": name}).status_code == 404
    register_adapter(
        serving_settings, name, tiny_adapters[1], base_model=serving_settings.base_model
    )
    response = post(vllm_client, {"meeting": MEETING, "adapter": name})
    assert_plan_response(response, adapter=name)
    assert name in vllm_client.get("/ready").json()["loaded_adapters"]


def test_markdown_and_notion_formats(vllm_client) -> None:
    body = {"meeting": MEETING, "adapter": "base", "seed": 7}
    markdown = post(vllm_client, body, format="markdown")
    assert markdown.status_code == 200, markdown.text
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert markdown.text.startswith("# ")
    assert "## 핵심 목표" in markdown.text and "### 실행 계획" in markdown.text

    notion = post(vllm_client, body, format="notion")
    assert notion.status_code == 200, notion.text
    page = notion.json()
    assert page["properties"]["title"]["title"][0]["text"]["content"]
    kinds = {block["type"] for block in page["children"]}
    assert {"heading_2", "bulleted_list_item", "numbered_list_item"} <= kinds
    assert all(block["object"] == "block" for block in page["children"])


def test_long_meeting_is_chunked_and_merged(vllm_client) -> None:
    # About 11,000 characters: far beyond the 2,048-token context of the test engine.
    lines = [
        f"[{i // 60:02d}:{i % 60:02d}] Speaker_{'ABC'[i % 3]}: 리모컨 디자인과 배터리 수명, "
        f"가격 목표 {i}번 항목을 다음 주까지 검토하겠습니다."
        for i in range(160)
    ]
    response = post(vllm_client, {"meeting": "\n".join(lines), "adapter": "base"})
    assert response.status_code == 200, response.text
    body = response.json()
    ProjectPlan.model_validate(body["plan"])
    assert body["chunks"] > 1
    assert any("chunks" in warning for warning in body["warnings"])
    assert body["usage"]["prompt_tokens"] > 2048


def test_answer_cut_off_twice_is_502_with_what_failed(vllm_client) -> None:
    response = post(vllm_client, {"meeting": MEETING, "adapter": "base", "max_tokens": 16})
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "generation_invalid"
    assert "did not validate" in error["message"]
    attempts = error["detail"]["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2]
    assert attempts[0]["seed"] != attempts[1]["seed"]
    assert all(a["finish_reason"] == "length" for a in attempts)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"meeting": "   \n\t "}, "body.meeting", "empty"),
        ({"meeting": ""}, "body.meeting", "empty"),
        ({"meeting": []}, "body.meeting", "empty"),
        ({"meeting": [{"speaker": "A"}]}, "body.meeting", "text is missing"),
        ({"meeting": [{"speaker": "A", "text": "  "}]}, "body.meeting", "text is missing"),
        ({"meeting": ["just a string"]}, "body.meeting", "'text' field"),
        ({"meeting": 42}, "body.meeting", "string or a list"),
        ({"meeting": {"text": "x"}}, "body.meeting", "string or a list"),
        ({}, "body.meeting", "required"),
        ({"meeting": "x", "temperature": "hot"}, "body.temperature", "number"),
        ({"meeting": "x", "temperature": 5}, "body.temperature", "less than"),
        ({"meeting": "x", "max_tokens": 1}, "body.max_tokens", "greater than"),
        ({"meeting": "x", "max_tokens": "many"}, "body.max_tokens", "integer"),
        ({"meeting": "x", "adapter": 3}, "body.adapter", "string"),
        ({"meeting": "x", "extra": 1}, "body.extra", "not permitted"),
    ],
)
def test_bad_input_is_a_clear_422(vllm_client, body: dict, field: str, words: str) -> None:
    response = post(vllm_client, body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["message"]
    assert any(p["field"] == field and words in p["message"] for p in error["detail"]), error


def test_body_that_is_not_json_is_422(vllm_client) -> None:
    response = vllm_client.post(
        "/generate", content=b"meeting=hello", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


def test_unknown_adapter_is_404(vllm_client) -> None:
    response = post(vllm_client, {"meeting": MEETING, "adapter": "no-such-adapter"})
    assert response.status_code == 404
    assert "no-such-adapter" in response.json()["error"]["message"]


def test_oversized_body_is_413_before_parsing(vllm_client, serving_settings) -> None:
    size = serving_settings.max_request_bytes + 10
    response = vllm_client.post(
        "/generate", content=b"x" * size, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert "MAX_REQUEST_BYTES" in response.json()["error"]["message"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(size // 65536 + 1):
            yield b" " * 65536

    streamed = vllm_client.post(
        "/generate", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413


def test_meeting_over_the_hard_limit_is_413(vllm_client, serving_settings) -> None:
    meeting = "가" * (serving_settings.max_meeting_chars + 1)
    response = post(vllm_client, {"meeting": meeting})
    assert response.status_code == 413
    assert "20,000" in response.json()["error"]["message"]


def test_adapter_for_another_base_model_is_409(vllm_client, serving_settings, tiny_adapters):
    name = unique("other-base")
    register_adapter(serving_settings, name, tiny_adapters[0], base_model="Qwen/Qwen3-8B")
    response = post(vllm_client, {"meeting": MEETING, "adapter": name})
    assert response.status_code == 409
    message = response.json()["error"]["message"]
    assert "Qwen/Qwen3-8B" in message and "trained on" in message


def test_adapter_with_only_a_pickle_is_refused(
    vllm_client, serving_settings, tiny_adapters, tmp_path
) -> None:
    name = unique("pickle")
    register_adapter(
        serving_settings,
        name,
        bin_only_copy(tiny_adapters[0], tmp_path / "bin"),
        base_model=serving_settings.base_model,
    )
    response = post(vllm_client, {"meeting": MEETING, "adapter": name})
    assert response.status_code == 422
    assert "safetensors only" in response.json()["error"]["message"]


def test_broken_adapter_is_refused_and_the_engine_survives(
    vllm_client, serving_settings, tiny_adapters, tmp_path
) -> None:
    # vLLM's engine process dies on weights it cannot load; the service must never hand it any.
    broken = Path(shutil.copytree(tiny_adapters[0], tmp_path / "broken"))
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    name = unique("broken")
    register_adapter(serving_settings, name, broken, base_model=serving_settings.base_model)
    response = post(vllm_client, {"meeting": MEETING, "adapter": name})
    assert response.status_code == 422
    assert "unreadable" in response.json()["error"]["message"]
    assert vllm_client.get("/ready").json()["ready"] is True
    assert_plan_response(post(vllm_client, {"meeting": MEETING, "adapter": "base"}), adapter=None)


def test_adapter_outside_the_data_folder_is_refused(
    vllm_client, serving_settings, tiny_adapters
) -> None:
    from ttalkkac.store import crud
    from ttalkkac.store.db import Database

    name = unique("outside")
    db = Database(serving_settings.resolved_database_url)
    with db.session() as session:
        crud.create_adapter(
            session,
            name=name,
            base_model=serving_settings.base_model,
            path=str(tiny_adapters[0]),  # a valid adapter, but not under DATA_DIR
            rank=8,
        )
    db.dispose()
    response = post(vllm_client, {"meeting": MEETING, "adapter": name})
    assert response.status_code == 422
    assert "outside the managed data folder" in response.json()["error"]["message"]


def test_flood_past_the_waiting_limit_gets_503_with_retry_after(vllm_client) -> None:
    # The shared app admits 4 requests at a time; 12 at once must see some 503s, fast, and
    # every admitted request must still return a valid plan.
    body = {"meeting": MEETING, "adapter": "base"}
    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(lambda _: post(vllm_client, body), range(12)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) >= 1 and statuses.count(200) >= 4, statuses
    for response in responses:
        if response.status_code == 503:
            assert int(response.headers["Retry-After"]) >= 1
            assert "waiting" in response.json()["error"]["message"]
        else:
            ProjectPlan.model_validate(response.json()["plan"])
    assert vllm_client.get("/ready").json()["waiting"] == 0


def test_openapi_documents_generate_with_korean_examples(vllm_client) -> None:
    spec = vllm_client.get("/openapi.json").json()
    operation = spec["paths"]["/generate"]["post"]
    assert {"200", "404", "413", "422", "502", "503"} <= set(operation["responses"])
    schemas = json.dumps(spec["components"]["schemas"], ensure_ascii=False)
    assert "회의록 자동 요약" in schemas and "김민수" in schemas


def test_lone_surrogate_in_the_meeting_is_422(vllm_client) -> None:
    # The JSON escape decodes to a str UTF-8 cannot encode: refused before the engine sees it.
    response = vllm_client.post(
        "/generate",
        content=b'{"meeting": "\\ud800 hello", "adapter": "base"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"
    assert response.json()["error"]["detail"][0]["message"].startswith("meeting: not valid Unicode")
    assert vllm_client.get("/ready").json()["ready"] is True
