"""The plan history store and its retention, on SQLite and on the machine's PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.utils.gold_factory import plan_dict
from tests.utils.stores import BACKENDS, store_on
from ttalkkac.inference.service import PlanResult
from ttalkkac.plan import normalize_plan
from ttalkkac.plan_history import keep_plan, meeting_digest, prune
from ttalkkac.settings import Settings
from ttalkkac.store import plans as store
from ttalkkac.store.db import Database
from ttalkkac.store.models import Plan, utcnow


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    yield from store_on(request, f"sqlite:///{tmp_path / 'store.db'}")


def result(name: str = "리모컨", adapter: str | None = None) -> PlanResult:
    return PlanResult(
        plan=normalize_plan(plan_dict(name=name)).plan,
        adapter=adapter,
        base_model="tiny-qwen3",
        engine="vllm",
        usage={"prompt_tokens": 120, "completion_tokens": 80},
        timings={"queue_ms": 1.5, "generate_ms": 900.0},
        chunks=1,
        warnings=["compact"],
    )


def test_a_kept_plan_has_a_digest_not_the_meeting(db: Database, settings: Settings) -> None:
    meeting = "[00:01] 김민수: 회의록 요약 서비스를 논의합니다."
    with db.session() as session:
        plan_id = keep_plan(session, settings, result(), meeting=meeting, request_id="r1").id
    with db.session() as session:
        row = store.get_plan(session, id=plan_id)
        assert row.meeting_sha256 == hashlib.sha256(meeting.encode("utf-8")).hexdigest()
        assert row.meeting_chars == len(meeting)
        assert row.plan["project_name"] == "리모컨" and row.adapter is None
        assert row.timings == {"queue_ms": 1.5, "generate_ms": 900.0}
        assert row.warnings == ["compact"] and row.request_id == "r1"
        assert row.created_at.tzinfo is not None
        assert row.notion_page_id is None and row.notion_blocks == 0
        # No column holds the meeting text.
        assert not any(
            isinstance(v, str) and "김민수" in v for v in vars(row).values() if v is not None
        )


def test_list_filters_and_pages_newest_first(db: Database, settings: Settings) -> None:
    with db.session() as session:
        ids = [
            keep_plan(session, settings, result(f"p{i}", "ad" if i % 2 else None), meeting=f"m{i}")
            for i in range(5)
        ]
        ids = [row.id for row in ids]
    with db.session() as session:
        rows, count = store.list_plans(session, offset=0, limit=2)
        assert count == 5 and [r.id for r in rows] == ids[::-1][:2]
        rows, count = store.list_plans(session, offset=4, limit=2)
        assert [r.id for r in rows] == [ids[0]]
        rows, count = store.list_plans(session, adapter="base")
        assert count == 3 and {r.id for r in rows} == {ids[0], ids[2], ids[4]}
        rows, count = store.list_plans(session, adapter="ad")
        assert count == 2
        rows, count = store.list_plans(session, meeting_sha256=meeting_digest("m3").upper())
        assert [r.id for r in rows] == [ids[3]]


def test_delete(db: Database, settings: Settings) -> None:
    with db.session() as session:
        plan_id = keep_plan(session, settings, result(), meeting="m").id
    with db.session() as session:
        assert store.delete_plan(session, id=plan_id)
        assert not store.delete_plan(session, id=plan_id)
        assert store.get_plan(session, id=plan_id) is None


def test_retention_by_age_and_by_count(db: Database, settings: Settings) -> None:
    settings = settings.model_copy(update={"plan_retention_days": 30, "plan_max_records": 3})
    now = utcnow()
    with db.session() as session:
        for days in (40, 31):  # past the retention
            store.create_plan(
                session,
                plan={},
                adapter=None,
                base_model="m",
                engine="vllm",
                meeting_sha256="0" * 64,
                meeting_chars=1,
                created_at=now - timedelta(days=days),
            )
        recent = store.create_plan(
            session,
            plan={},
            adapter=None,
            base_model="m",
            engine="vllm",
            meeting_sha256="0" * 64,
            meeting_chars=1,
            created_at=now - timedelta(days=29),
        ).id
    with db.session() as session:
        assert prune(session, settings) == 2
    with db.session() as session:
        kept = [keep_plan(session, settings, result(), meeting=f"m{i}").id for i in range(3)]
    with db.session() as session:
        rows, count = store.list_plans(session)
        # The count limit dropped the oldest (the 29-day-old plan), on write.
        assert count == 3 and {r.id for r in rows} == set(kept)
        assert store.get_plan(session, id=recent) is None


def test_notion_claim_is_exclusive_until_released_or_stale(db: Database) -> None:
    with db.session() as session:
        plan_id = store.create_plan(
            session,
            plan={},
            adapter=None,
            base_model="m",
            engine="vllm",
            meeting_sha256="0" * 64,
            meeting_chars=1,
        ).id
    long_ago = utcnow() - timedelta(hours=1)
    with db.session() as session:
        assert store.claim_notion(session, id=plan_id, claim="a", stale_before=long_ago)
    with db.session() as session:
        assert not store.claim_notion(session, id=plan_id, claim="b", stale_before=long_ago)
        assert not store.update_notion(session, id=plan_id, claim="b", notion_blocks=5)
        assert store.update_notion(session, id=plan_id, claim="a", notion_blocks=5)
    with db.session() as session:
        # A claim older than the staleness bound is taken over (its process died).
        assert store.claim_notion(
            session, id=plan_id, claim="c", stale_before=utcnow() + timedelta(seconds=1)
        )
    with db.session() as session:
        store.release_notion(session, id=plan_id, claim="a")  # not the holder: no effect
        assert session.get(Plan, plan_id).notion_claim == "c"
        store.release_notion(session, id=plan_id, claim="c")
    with db.session() as session:
        assert session.get(Plan, plan_id).notion_claim is None
        assert store.set_notion_page(
            session, id=plan_id, page_id="p1", url="u", parent={}, blocks=3
        )
        assert not store.set_notion_page(
            session, id=plan_id, page_id="p2", url="u", parent={}, blocks=3
        )
