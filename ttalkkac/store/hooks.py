"""Listeners told when a training job reaches a terminal status, in the transaction that moved it.

Every status change of a job goes through ``crud.transition_job``, wherever it happens (the
worker finishing, the API cancelling a queued job, the orphan sweep failing one), so that is
the one place that tells. The store imports nothing above it: the webhook sender
(``ttalkkac.webhooks``) subscribes here at process start. A listener runs inside the
transaction; anything slow or fallible must wait for the commit (``after_commit``).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

JobEnded = Callable[[Session, str, str], None]  # (session, job id, terminal status)

_listeners: list[JobEnded] = []


def subscribe(listener: JobEnded) -> None:
    if listener not in _listeners:
        _listeners.append(listener)


def unsubscribe(listener: JobEnded) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def job_ended(session: Session, job_id: str, status: str) -> None:
    for listener in list(_listeners):
        listener(session, job_id, status)
