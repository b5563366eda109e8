"""Keyword-only CRUD over the plan history (``/plans``). Callers own the session."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from ttalkkac.store import crud
from ttalkkac.store.models import Plan, utcnow

BASE = "base"  # the adapter filter that means "no adapter", as in /generate


def create_plan(
    session: Session,
    *,
    plan: dict[str, Any],
    adapter: str | None,
    base_model: str,
    engine: str,
    meeting_sha256: str,
    meeting_chars: int,
    usage: dict[str, Any] | None = None,
    timings: dict[str, Any] | None = None,
    chunks: int = 1,
    warnings: list[str] | None = None,
    request_id: str | None = None,
    created_at: datetime | None = None,
) -> Plan:
    row = Plan(
        plan=plan,
        adapter=adapter,
        base_model=base_model,
        engine=engine,
        meeting_sha256=meeting_sha256,
        meeting_chars=meeting_chars,
        usage=usage or {},
        timings=timings or {},
        chunks=chunks,
        warnings=list(warnings or []),
        request_id=request_id,
        created_at=created_at or utcnow(),
    )
    session.add(row)
    session.flush()
    return row


def get_plan(session: Session, *, id: str) -> Plan | None:
    return session.get(Plan, id)


def list_plans(
    session: Session,
    *,
    offset: int = 0,
    limit: int = 100,
    adapter: str | None = None,
    meeting_sha256: str | None = None,
) -> tuple[list[Plan], int]:
    """Newest first. ``adapter="base"``: the plans of the base model."""
    where: list[Any] = []
    if adapter == BASE:
        where.append(Plan.adapter.is_(None))
    elif adapter is not None:
        where.append(Plan.adapter == adapter)
    if meeting_sha256 is not None:
        where.append(Plan.meeting_sha256 == meeting_sha256.lower())
    return crud.newest_first(session, Plan, where=where, offset=offset, limit=limit)


def delete_plan(session: Session, *, id: str) -> bool:
    """True when a plan was deleted (its Notion page, if any, stays in Notion)."""
    return session.execute(delete(Plan).where(Plan.id == id)).rowcount == 1


def prune_plans(session: Session, *, older_than: datetime, keep: int) -> int:
    """Delete plans created before ``older_than`` and all but the ``keep`` newest; the count.

    Cheap enough to run on every write: both conditions use the ``created_at`` index, and on
    a write only the row or two past ``keep`` are fetched.
    """
    deleted = session.execute(delete(Plan).where(Plan.created_at < older_than)).rowcount or 0
    excess = session.scalars(
        select(Plan.id).order_by(Plan.created_at.desc(), Plan.id.desc()).offset(keep).limit(10_000)
    ).all()
    if excess:
        deleted += session.execute(delete(Plan).where(Plan.id.in_(list(excess)))).rowcount or 0
    return deleted


# --- Notion publication: one at a time per plan ------------------------------------------------


def claim_notion(session: Session, *, id: str, claim: str, stale_before: datetime) -> bool:
    """Take the plan's publication claim; False when another live claim holds it.

    One conditional UPDATE, so two requests racing for the same plan (two API replicas, a
    client retrying while its first call still runs) cannot both create a page.
    """
    result = session.execute(
        update(Plan)
        .where(
            Plan.id == id,
            or_(Plan.notion_claim.is_(None), Plan.notion_claimed_at < stale_before),
        )
        .values(notion_claim=claim, notion_claimed_at=utcnow())
    )
    return result.rowcount == 1


def set_notion_page(
    session: Session,
    *,
    id: str,
    page_id: str,
    url: str | None,
    parent: dict[str, Any],
    blocks: int,
) -> bool:
    """Record the page Notion created; False when the plan has another page (or is gone)."""
    result = session.execute(
        update(Plan)
        .where(Plan.id == id, Plan.notion_page_id.is_(None))
        .values(
            notion_page_id=page_id,
            notion_page_url=url,
            notion_parent=parent,
            notion_blocks=blocks,
            notion_claimed_at=utcnow(),
        )
    )
    return result.rowcount == 1


def update_notion(session: Session, *, id: str, claim: str, **fields: Any) -> bool:
    """Record publication progress, only while ``claim`` is still held (refreshes it too)."""
    result = session.execute(
        update(Plan)
        .where(Plan.id == id, Plan.notion_claim == claim)
        .values(notion_claimed_at=utcnow(), **fields)
    )
    return result.rowcount == 1


def release_notion(session: Session, *, id: str, claim: str) -> None:
    session.execute(
        update(Plan)
        .where(Plan.id == id, Plan.notion_claim == claim)
        .values(notion_claim=None, notion_claimed_at=None)
    )
