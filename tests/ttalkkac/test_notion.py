"""Publishing plans to Notion through the real SDK, against a local fake of Notion's API."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.utils.fake_notion import TOKEN, FakeNotion, serve
from tests.utils.gold_factory import plan_dict
from ttalkkac.errors import Conflict, NotConfigured, NotFound, UpstreamRefused, UpstreamUnavailable
from ttalkkac.notion import (
    MAX_CHILDREN,
    NotionParent,
    PageWriter,
    fit_blocks,
    page_parts,
    parse_notion_id,
    publish_plan,
    retry_after_s,
    write_page,
)
from ttalkkac.plan import normalize_plan
from ttalkkac.render import NOTION_TEXT_LIMIT
from ttalkkac.settings import Settings
from ttalkkac.store import plans as store
from ttalkkac.store.db import Database

PARENT = NotionParent("page_id", "01234567-89ab-cdef-0123-456789abcdef")


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[FakeNotion, str]]:
    fake = FakeNotion()
    with serve(fake.app) as url:
        yield fake, url


@pytest.fixture
def fake(fake_server) -> FakeNotion:
    fake_server[0].reset()
    return fake_server[0]


@pytest.fixture
def notion_settings(settings: Settings, fake_server) -> Settings:
    return settings.model_copy(
        update={
            "notion_token": SecretStr(TOKEN),
            "notion_base_url": fake_server[1],
            "notion_max_retries": 2,
            "notion_max_retry_after_s": 5,
            "notion_timeout_s": 10,
        }
    )


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.resolved_database_url)
    database.create_all()
    yield database
    database.dispose()


class Sleeps(list):
    """Records the waits instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def writer(notion_settings: Settings) -> Iterator[PageWriter]:
    with PageWriter.from_settings(notion_settings, sleep=Sleeps()) as pages:
        yield pages


def paragraphs(n: int, chars: int = 20) -> list[dict]:
    return [
        {
            "object": "block",
            "type": "paragraph",
            "paragraph": {"rich_text": [{"type": "text", "text": {"content": f"{i:04d}" * chars}}]},
        }
        for i in range(n)
    ]


def keep(db: Database, **overrides) -> str:
    plan = normalize_plan(plan_dict(**overrides)).plan
    with db.session() as session:
        row = store.create_plan(
            session,
            plan=plan.model_dump(mode="json"),
            adapter=None,
            base_model="tiny",
            engine="vllm",
            meeting_sha256="0" * 64,
            meeting_chars=10,
            usage={"prompt_tokens": 1, "completion_tokens": 2},
            timings={"queue_ms": 0.0, "generate_ms": 1.0},
        )
        return row.id


def content(block: dict) -> str:
    return "".join(part["text"]["content"] for part in block[block["type"]]["rich_text"])


# --- pure parts --------------------------------------------------------------------------------


def test_notion_ids_from_ids_and_urls() -> None:
    dashed = "01234567-89ab-cdef-0123-456789abcdef"
    assert parse_notion_id(dashed.upper()) == dashed
    assert parse_notion_id(dashed.replace("-", "")) == dashed
    url = "https://www.notion.so/team/Cafe-Plans-0123456789abcdef0123456789abcdef?pvs=4"
    assert parse_notion_id(url) == dashed
    for bad in ("", "../../v1/users", "0123", "https://www.notion.so/Cafe-Plans"):
        with pytest.raises(ValueError):
            parse_notion_id(bad)


def test_fit_blocks_splits_long_text_and_long_rich_text_lists() -> None:
    long_text = "가" * (NOTION_TEXT_LIMIT * 2 + 5)
    block = {
        "object": "block",
        "type": "paragraph",
        "paragraph": {
            "rich_text": [
                {"type": "text", "text": {"content": long_text}, "annotations": {"bold": True}}
            ]
            + [{"type": "text", "text": {"content": f"{i}"}} for i in range(150)]
        },
    }
    fitted = fit_blocks([block])
    assert [b["type"] for b in fitted] == ["paragraph", "paragraph"]
    pieces = [p for b in fitted for p in b["paragraph"]["rich_text"]]
    assert max(len(p["text"]["content"]) for p in pieces) == NOTION_TEXT_LIMIT
    assert all(len(b["paragraph"]["rich_text"]) <= 100 for b in fitted)
    # Nothing lost, order and annotations kept.
    assert "".join(content(b) for b in fitted) == long_text + "".join(map(str, range(150)))
    assert [p.get("annotations") for p in pieces[:3]] == [{"bold": True}] * 3


def test_page_parts_title_uses_the_title_property_id() -> None:
    plan = normalize_plan(plan_dict(name="회의록 서비스")).plan
    properties, blocks = page_parts(plan)
    assert properties == {
        "title": {
            "title": [
                {
                    "type": "text",
                    "text": {"content": "회의록 서비스"},
                    "annotations": {"bold": False},
                }
            ]
        }
    }
    assert 10 < len(blocks) <= MAX_CHILDREN


def test_retry_after_header_forms() -> None:
    import httpx

    assert retry_after_s(httpx.Headers({"Retry-After": "3"})) == 3
    assert retry_after_s(httpx.Headers({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0
    when = "Wed, 21 Oct 2015 07:28:10 GMT"
    assert retry_after_s(httpx.Headers({"Retry-After": when}), now=1445412480.0) == 10
    assert retry_after_s(httpx.Headers()) is None
    for bad in ("soon", "nan", "-5", "inf"):
        assert retry_after_s(httpx.Headers({"Retry-After": bad})) is None


# --- requests through the SDK ------------------------------------------------------------------


def test_a_long_page_is_created_with_100_blocks_and_the_rest_appended(
    fake: FakeNotion, writer: PageWriter
) -> None:
    blocks = fit_blocks(paragraphs(250, chars=600))  # 2,400 characters each: split in two
    created, progress = [], []
    page_id, written = write_page(
        writer,
        parent=PARENT,
        properties={"title": {"title": [{"type": "text", "text": {"content": "t"}}]}},
        blocks=blocks,
        on_created=created.append,
        on_written=progress.append,
    )
    assert fake.violations == []
    assert written == 250 and progress == [200, 250]
    assert created[0]["id"] == page_id and created[0]["url"].startswith("https://www.notion.so/")
    assert [content(b) for b in fake.pages[page_id]["children"]] == [content(b) for b in blocks]
    assert [len(c["json"]["children"]) for c in fake.calls("POST", "/v1/pages")] == [100]
    appends = fake.calls("PATCH", f"/v1/blocks/{page_id}/children")
    assert [len(c["json"]["children"]) for c in appends] == [100, 50]
    for call in fake.requests:
        assert call["headers"]["authorization"] == f"Bearer {TOKEN}"
        assert call["headers"]["notion-version"] == "2025-09-03"


def test_429_is_retried_after_what_retry_after_says(fake: FakeNotion, writer: PageWriter) -> None:
    fake.fail("POST", "/v1/pages", 429, retry_after="2")
    page = writer.create_page(PARENT, {"title": {"title": []}}, paragraphs(3))
    assert writer.sleep == [2.0]
    assert len(fake.calls("POST", "/v1/pages")) == 2 and list(fake.pages) == [page["id"]]


def test_a_retry_after_over_the_limit_is_passed_on(fake: FakeNotion, writer: PageWriter) -> None:
    fake.fail("POST", "/v1/pages", 429, retry_after="120")
    with pytest.raises(UpstreamUnavailable) as caught:
        writer.create_page(PARENT, {"title": {"title": []}}, paragraphs(1))
    assert caught.value.retry_after_s == 120 and writer.sleep == []
    assert fake.pages == {}


def test_5xx_is_retried_with_backoff_then_given_up(fake: FakeNotion, writer: PageWriter) -> None:
    fake.fail("POST", "/v1/pages", 503, times=5)
    with pytest.raises(UpstreamUnavailable, match="503"):
        writer.create_page(PARENT, {"title": {"title": []}}, paragraphs(1))
    assert writer.sleep == [0.5, 1.0]  # max_retries=2: three tries in all
    assert len(fake.calls("POST", "/v1/pages")) == 3


def test_an_append_whose_answer_was_lost_is_not_sent_twice(
    fake: FakeNotion, writer: PageWriter
) -> None:
    page = writer.create_page(PARENT, {"title": {"title": []}}, paragraphs(100))
    fake.fail("PATCH", "/v1/blocks/", 500, after_apply=True)
    assert writer.append(page["id"], paragraphs(30), written=100) == 130
    assert len(fake.pages[page["id"]]["children"]) == 130
    assert len(fake.calls("PATCH", "/v1/blocks/")) == 1  # checked by listing, not re-sent
    # Not applied: listed, then sent again.
    fake.fail("PATCH", "/v1/blocks/", 502)
    assert writer.append(page["id"], paragraphs(5), written=130) == 135
    assert len(fake.pages[page["id"]]["children"]) == 135
    assert len(fake.calls("PATCH", "/v1/blocks/")) == 3


def test_notions_refusal_is_passed_on(fake: FakeNotion, writer: PageWriter) -> None:
    fake.shared = {"ffffffff-89ab-cdef-0123-456789abcdef"}
    with pytest.raises(UpstreamRefused) as caught:
        writer.create_page(PARENT, {"title": {"title": []}}, paragraphs(1))
    assert "404 object_not_found" in caught.value.message
    assert "shared with your integration" in caught.value.message
    assert caught.value.detail == {"service": "notion", "status": 404, "code": "object_not_found"}
    assert writer.sleep == []


def test_a_wrong_token_is_a_refusal_naming_it(notion_settings, fake: FakeNotion) -> None:
    settings = notion_settings.model_copy(update={"notion_token": SecretStr("secret_wrong")})
    with PageWriter.from_settings(settings) as pages, pytest.raises(UpstreamRefused) as caught:
        pages.create_page(PARENT, {"title": {"title": []}}, [])
    assert "401" in caught.value.message and "API token is invalid" in caught.value.message


# --- publishing a kept plan --------------------------------------------------------------------


def test_publish_is_once_per_plan(db, notion_settings, fake: FakeNotion) -> None:
    plan_id = keep(db)
    first = publish_plan(db, notion_settings, plan_id=plan_id, parent=PARENT)
    assert first.created and first.page_id in fake.pages
    assert first.url == f"https://www.notion.so/{first.page_id.replace('-', '')}"
    assert fake.violations == []
    page = fake.pages[first.page_id]
    assert page["parent"] == {"type": "page_id", "page_id": PARENT.id}
    assert page["properties"]["title"]["title"][0]["text"]["content"] == "리모컨 디자인 프로젝트"
    assert len(page["children"]) == first.blocks

    other = NotionParent("database_id", "ffffffff-89ab-cdef-0123-456789abcdef")
    again = publish_plan(db, notion_settings, plan_id=plan_id, parent=other)
    assert not again.created and again.page_id == first.page_id and again.url == first.url
    assert len(fake.pages) == 1 and len(fake.calls("POST", "/v1/pages")) == 1
    with db.session() as session:
        row = store.get_plan(session, id=plan_id)
        assert row.notion_page_url == first.url and row.notion_claim is None


def test_concurrent_publications_make_one_page(db, notion_settings, fake: FakeNotion) -> None:
    plan_id = keep(db)
    fake.create_delay_s = 0.5
    results: list = []
    first = threading.Thread(
        target=lambda: results.append(
            publish_plan(db, notion_settings, plan_id=plan_id, parent=PARENT)
        )
    )
    first.start()
    assert fake.create_started.wait(10)
    with pytest.raises(Conflict, match="being created"):
        publish_plan(db, notion_settings, plan_id=plan_id, parent=PARENT)
    first.join(10)
    assert results and results[0].created
    later = publish_plan(db, notion_settings, plan_id=plan_id, parent=PARENT)
    assert later.page_id == results[0].page_id and not later.created
    assert len(fake.pages) == 1


def test_a_failed_publication_releases_the_plan(db, notion_settings, fake: FakeNotion) -> None:
    plan_id = keep(db)
    fake.fail("POST", "/v1/pages", 400, code="validation_error", message="body failed validation")
    with pytest.raises(UpstreamRefused, match="body failed validation"):
        publish_plan(db, notion_settings, plan_id=plan_id, parent=PARENT)
    with db.session() as session:
        row = store.get_plan(session, id=plan_id)
        assert row.notion_claim is None and row.notion_page_id is None
    assert publish_plan(db, notion_settings, plan_id=plan_id, parent=PARENT).created


def test_a_page_left_unfinished_is_finished_not_made_again(
    db, notion_settings, fake: FakeNotion
) -> None:
    """A process that died after Notion created the page: the next call appends the blocks."""
    plan_id = keep(db)
    with PageWriter.from_settings(notion_settings) as pages:
        page = pages.create_page(PARENT, {"title": {"title": []}}, [])
    with db.session() as session:
        assert store.set_notion_page(
            session, id=plan_id, page_id=page["id"], url=page["url"], parent={}, blocks=0
        )
    result = publish_plan(db, notion_settings, plan_id=plan_id, parent=PARENT)
    assert not result.created and result.page_id == page["id"]
    expected = [content(b) for b in page_parts_of(db, plan_id)]
    assert [content(b) for b in fake.pages[page["id"]]["children"]] == expected
    assert result.blocks == len(expected) and len(fake.pages) == 1


def page_parts_of(db: Database, plan_id: str) -> list[dict]:
    from ttalkkac.plan import ProjectPlan

    with db.session() as session:
        return page_parts(ProjectPlan.model_validate(store.get_plan(session, id=plan_id).plan))[1]


def test_no_token_and_unknown_plan(db, settings: Settings, fake: FakeNotion) -> None:
    plan_id = keep(db)
    with pytest.raises(NotConfigured, match="NOTION_TOKEN"):
        publish_plan(db, settings, plan_id=plan_id, parent=PARENT)
    with pytest.raises(NotFound):
        publish_plan(db, settings, plan_id="pl_missing", parent=PARENT)
    assert fake.requests == []


def test_the_token_is_not_in_the_settings_repr(notion_settings: Settings, tmp_path: Path) -> None:
    assert TOKEN not in repr(notion_settings) and TOKEN not in str(notion_settings.model_dump())
