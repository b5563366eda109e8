"""Keyword-only CRUD over the webhook outbox (``WebhookDelivery``). Callers own the session.

A delivery is claimed for one attempt at a time with a conditional UPDATE, so two processes
never make the same attempt; the claim is released when the attempt is recorded.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from ttalkkac.store.hooks import Subject
from ttalkkac.store.models import DeliveryState, WebhookDelivery, utcnow


@dataclass(frozen=True)
class Claimed:
    """One attempt this process holds: what to send and the token that records it."""

    id: str
    subject: Subject
    subject_id: str
    event: str
    url: str
    client_url: bool
    body: bytes
    attempt: int  # the number of the attempt about to be made, 1-based
    token: str


def add(
    session: Session,
    *,
    id: str,
    subject: Subject,
    subject_id: str,
    event: str,
    url: str,
    client_url: bool,
    body: bytes,
    now: datetime,
) -> None:
    session.add(
        WebhookDelivery(
            id=id,
            subject=subject.value,
            subject_id=subject_id,
            event=event,
            url=url,
            client_url=client_url,
            body=body.decode("utf-8"),
            state=DeliveryState.pending.value,
            next_attempt_at=now,
        )
    )
    session.flush()


def _claimable(now: datetime, stale_before: datetime) -> list[Any]:
    return [
        WebhookDelivery.state == DeliveryState.pending.value,
        WebhookDelivery.next_attempt_at <= now,
        or_(WebhookDelivery.claim.is_(None), WebhookDelivery.claimed_at < stale_before),
    ]


def claim_due(
    session: Session, *, now: datetime, stale_before: datetime, limit: int
) -> list[Claimed]:
    """Claim up to ``limit`` due deliveries (oldest due first); claims held by others are
    skipped unless taken before ``stale_before``."""
    rows = session.execute(
        select(WebhookDelivery.id, WebhookDelivery.attempts)
        .where(*_claimable(now, stale_before))
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
    ).all()
    claimed = []
    for id, attempts in rows:
        token = uuid.uuid4().hex
        # The conditions again, in the UPDATE: another process may have claimed it since.
        won = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == id,
                WebhookDelivery.attempts == attempts,
                *_claimable(now, stale_before),
            )
            .values(claim=token, claimed_at=now)
            .execution_options(synchronize_session=False)
        )
        if won.rowcount != 1:
            continue
        row = session.get(WebhookDelivery, id, populate_existing=True)
        assert row is not None
        claimed.append(
            Claimed(
                id=row.id,
                subject=Subject(row.subject),
                subject_id=row.subject_id,
                event=row.event,
                url=row.url,
                client_url=row.client_url,
                body=row.body.encode("utf-8"),
                attempt=row.attempts + 1,
                token=token,
            )
        )
    return claimed


def record(
    session: Session,
    *,
    claimed: Claimed,
    state: DeliveryState,
    next_attempt_at: datetime | None,
    status: int | None,
    error: str | None,
    entry: dict[str, Any],
) -> bool:
    """Record an attempt and release the claim; False when the claim was lost meanwhile
    (taken over as stale): that attempt is then not recorded, the new holder's will be."""
    row = session.get(WebhookDelivery, claimed.id, populate_existing=True)
    if row is None or row.claim != claimed.token:
        return False
    values: dict[str, Any] = {
        "state": state.value,
        "attempts": claimed.attempt,
        "claim": None,
        "claimed_at": None,
        "last_status": status,
        "last_error": error,
        "log": [*(row.log or []), entry],
        "updated_at": utcnow(),
    }
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    result = session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == claimed.id, WebhookDelivery.claim == claimed.token)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def next_due(session: Session) -> datetime | None:
    """When the earliest unclaimed pending delivery is due (None: none is pending)."""
    return session.scalar(
        select(func.min(WebhookDelivery.next_attempt_at)).where(
            WebhookDelivery.state == DeliveryState.pending.value,
            WebhookDelivery.claim.is_(None),
        )
    )


def still_pending(session: Session, *, ids: Iterable[str]) -> set[str]:
    ids = list(ids)
    if not ids:
        return set()
    return set(
        session.scalars(
            select(WebhookDelivery.id).where(
                WebhookDelivery.id.in_(ids),
                WebhookDelivery.state == DeliveryState.pending.value,
            )
        ).all()
    )


def list_deliveries(
    session: Session, *, subject: Subject, subject_id: str
) -> list[WebhookDelivery]:
    """A subject's deliveries, in the order they were made."""
    return list(
        session.scalars(
            select(WebhookDelivery)
            .where(
                WebhookDelivery.subject == subject.value,
                WebhookDelivery.subject_id == subject_id,
            )
            .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
        ).all()
    )


def delete_ended(session: Session, *, subject: Subject, subject_id: str) -> int:
    """Delete a subject's deliveries that are over (delivered, given up, refused).

    Pending ones stay: a receiver told of a job's end is told even when the job is deleted
    right after, and the body they send carries everything they need.
    """
    result = session.execute(
        delete(WebhookDelivery).where(
            WebhookDelivery.subject == subject.value,
            WebhookDelivery.subject_id == subject_id,
            WebhookDelivery.state != DeliveryState.pending.value,
        )
    )
    return result.rowcount
