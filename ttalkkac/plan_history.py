"""The plan history: what is kept of a generated plan, and the retention policy.

Kept: the plan, adapter, base model, engine, usage, timings, chunks, warnings and a SHA-256 of
the meeting's prompt text. Not kept: the meeting (transcripts are the sensitive part; the digest
lets a client that has the meeting find its plans). Retention: ``PLAN_RETENTION_DAYS`` and
``PLAN_MAX_RECORDS``, applied on every new plan and once at start-up, so no sweeper is needed.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from ttalkkac.settings import Settings
from ttalkkac.store import plans as store
from ttalkkac.store.models import Plan, utcnow

if TYPE_CHECKING:
    from ttalkkac.inference.service import PlanResult

logger = logging.getLogger(__name__)


def meeting_digest(text: str) -> str:
    """SHA-256 (hex) of the meeting's prompt text in UTF-8 (``ttalkkac.meetings.meeting_text``)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def keep_plan(
    session: Session,
    settings: Settings,
    result: PlanResult,
    *,
    meeting: str,
    request_id: str | None = None,
) -> Plan:
    """Store one generated plan and apply the retention policy in the same transaction."""
    row = store.create_plan(
        session,
        plan=result.plan.model_dump(mode="json"),
        adapter=result.adapter,
        base_model=result.base_model,
        engine=result.engine,
        meeting_sha256=meeting_digest(meeting),
        meeting_chars=len(meeting),
        usage=dict(result.usage),
        timings=dict(result.timings),
        chunks=result.chunks,
        warnings=list(result.warnings),
        request_id=request_id,
    )
    prune(session, settings)
    return row


def prune(session: Session, settings: Settings) -> int:
    """Delete what the retention settings no longer allow; the number of plans deleted."""
    deleted = store.prune_plans(
        session,
        older_than=utcnow() - timedelta(days=settings.plan_retention_days),
        keep=settings.plan_max_records,
    )
    if deleted:
        logger.info("plan history: %d plan(s) past the retention settings deleted", deleted)
    return deleted
