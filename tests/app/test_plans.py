"""``/plans`` over HTTP: the history, its three forms, deletion, and Notion pages (local fake)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from tests.utils.fake_notion import TOKEN, FakeNotion, serve
from tests.utils.gold_factory import plan_dict
from ttalkkac.inference.service import PlanResult
from ttalkkac.plan import ProjectPlan, normalize_plan
from ttalkkac.plan_history import keep_plan

PAGE = "01234567-89ab-cdef-0123-456789abcdef"


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[FakeNotion, str]]:
    fake = FakeNotion()
    with serve(fake.app) as url:
        yield fake, url


@pytest.fixture
def fake(fake_server) -> FakeNotion:
    fake_server[0].reset()
    return fake_server[0]


def app_client(settings) -> TestClient:
    from app.main import create_app

    return TestClient(create_app(settings))


@pytest.fixture
def client(settings, fake_server) -> Iterator[TestClient]:
    notion = settings.model_copy(
        update={
            "notion_token": SecretStr(TOKEN),
            "notion_base_url": fake_server[1],
            "notion_max_retries": 2,
            "notion_max_retry_after_s": 5,
        }
    )
    with app_client(notion) as c:
        yield c


def kept(client: TestClient, name: str = "리모컨 디자인 프로젝트", **kw) -> str:
    result = PlanResult(
        plan=normalize_plan(plan_dict(name=name)).plan,
        adapter=kw.get("adapter"),
        base_model="tiny-qwen3",
        engine="vllm",
        usage={"prompt_tokens": 120, "completion_tokens": 80},
        timings={"queue_ms": 1.5, "generate_ms": 900.0},
        chunks=1,
    )
    settings = client.app.state.settings
    with client.app.state.db.session() as session:
        return keep_plan(session, settings, result, meeting=kw.get("meeting", "회의")).id


def test_list_get_and_delete(client: TestClient) -> None:
    first, second = kept(client, "첫 번째"), kept(client, "두 번째", adapter="tiny-a")
    listing = client.get("/plans", params={"limit": 1})
    assert listing.status_code == 200, listing.text
    assert listing.json()["count"] == 2 and [p["id"] for p in listing.json()["data"]] == [second]
    only_base = client.get("/plans", params={"adapter": "base"}).json()
    assert [p["id"] for p in only_base["data"]] == [first]

    record = client.get(f"/plans/{first}").json()
    ProjectPlan.model_validate(record["plan"])
    assert record["plan"]["project_name"] == "첫 번째"
    assert record["meeting_sha256"] == hashlib.sha256("회의".encode()).hexdigest()
    assert record["timings"] == {"queue_ms": 1.5, "generate_ms": 900.0}
    assert record["notion_page_url"] is None

    markdown = client.get(f"/plans/{first}", params={"format": "markdown"})
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert markdown.text.startswith("# 첫 번째\n")
    page = client.get(f"/plans/{first}", params={"format": "notion"}).json()
    assert page["properties"]["title"]["title"][0]["text"]["content"] == "첫 번째"
    assert page["children"][0]["type"] == "heading_2"

    assert client.delete(f"/plans/{first}").status_code == 204
    missing = client.get(f"/plans/{first}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert client.delete(f"/plans/{first}").status_code == 404
    assert client.get("/plans").json()["count"] == 1


def test_bad_queries_are_422(client: TestClient) -> None:
    assert client.get("/plans", params={"meeting_sha256": "abc"}).status_code == 422
    assert client.get("/plans", params={"limit": 0}).status_code == 422
    plan_id = kept(client)
    assert client.get(f"/plans/{plan_id}", params={"format": "pdf"}).status_code == 422


def test_notion_page_is_created_once(client: TestClient, fake: FakeNotion) -> None:
    plan_id = kept(client)
    url = f"https://www.notion.so/Team-Plans-{PAGE.replace('-', '')}?pvs=4"
    first = client.post(f"/plans/{plan_id}/notion", json={"parent_page_id": url})
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["created"] is True and body["parent"] == {"type": "page_id", "page_id": PAGE}
    assert body["page_id"] in fake.pages and fake.violations == []
    assert client.get(f"/plans/{plan_id}").json()["notion_page_url"] == body["url"]

    again = client.post(f"/plans/{plan_id}/notion", json={"database_id": PAGE.replace("-", "")})
    assert again.status_code == 200, again.text
    assert again.json()["page_id"] == body["page_id"] and again.json()["created"] is False
    assert len(fake.pages) == 1


def test_notion_rate_limit_waits_or_is_passed_on(client: TestClient, fake: FakeNotion) -> None:
    plan_id = kept(client)
    fake.fail("POST", "/v1/pages", 429, retry_after="60")
    busy = client.post(f"/plans/{plan_id}/notion", json={"parent_page_id": PAGE})
    assert busy.status_code == 503, busy.text
    assert busy.headers["retry-after"] == "60"
    assert busy.json()["error"]["code"] == "upstream_unavailable"
    fake.fail("POST", "/v1/pages", 429, retry_after="1")
    done = client.post(f"/plans/{plan_id}/notion", json={"parent_page_id": PAGE})
    assert done.status_code == 201, done.text
    assert len(fake.calls("POST", "/v1/pages")) == 3 and len(fake.pages) == 1


def test_notion_refusal_and_bad_parents(client: TestClient, fake: FakeNotion) -> None:
    plan_id = kept(client)
    fake.shared = set()
    refused = client.post(f"/plans/{plan_id}/notion", json={"parent_page_id": PAGE})
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "upstream_refused"
    assert "shared with your integration" in error["message"]
    assert error["detail"]["code"] == "object_not_found"

    for body in (
        {},
        {"parent_page_id": PAGE, "database_id": PAGE},
        {"parent_page_id": "../../v1/users/me"},
        {"page_id": PAGE},
    ):
        answer = client.post(f"/plans/{plan_id}/notion", json=body)
        assert answer.status_code == 422, (body, answer.text)
    assert client.post("/plans/pl_none/notion", json={"parent_page_id": PAGE}).status_code == 404
    assert len(fake.calls("POST", "/v1/pages")) == 1  # only the refused one reached Notion


def test_notion_without_a_token_is_409(settings) -> None:
    with app_client(settings) as c:
        plan_id = kept(c)
        answer = c.post(f"/plans/{plan_id}/notion", json={"parent_page_id": PAGE})
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "not_configured"
    assert "NOTION_TOKEN" in answer.json()["error"]["message"]


@pytest.mark.slow
def test_generate_keeps_the_plan(vllm_client: TestClient) -> None:
    meeting = "[00:01] Speaker_A: 리모컨 디자인을 논의하겠습니다.\n[00:02] Speaker_B: 좋습니다."
    answer = vllm_client.post("/generate", json={"meeting": meeting, "adapter": "base"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    record = vllm_client.get(f"/plans/{body['plan_id']}").json()
    assert record["plan"] == body["plan"] and record["adapter"] is None
    assert record["meeting_sha256"] == hashlib.sha256(meeting.encode()).hexdigest()
    assert record["usage"] == body["usage"] and record["chunks"] == 1

    markdown = vllm_client.post(
        "/generate", params={"format": "markdown"}, json={"meeting": meeting, "adapter": "base"}
    )
    assert markdown.status_code == 200
    plan_id = markdown.headers["x-plan-id"]
    assert plan_id != body["plan_id"]
    assert vllm_client.get(f"/plans/{plan_id}", params={"format": "markdown"}).text == markdown.text
