"""Listeners told when a training job or an evaluation reaches a terminal status, in the
transaction that moved it.

Every status change of a job goes through ``crud.transition_job``, and every one of an
evaluation through ``evaluations.transition_evaluation``, wherever it happens (the worker
finishing, the API cancelling, the orphan sweep failing one, the evaluation runner), so those
are the two places that tell. The store imports nothing above it: the webhook sender
(``ttalkkac.webhooks``) subscribes here at process start. A listener runs inside the
transaction: what it writes commits or rolls back with the status change, and anything slow or
fallible must wait for the commit (``after_commit``).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from sqlalchemy.orm import Session


class Subject(StrEnum):
    """What ended; also the first part of a webhook's event type (``training_job.succeeded``)."""

    training_job = "training_job"
    evaluation = "evaluation"


Ended = Callable[[Session, Subject, str, str], None]  # (session, subject, its id, its status)

_listeners: list[Ended] = []


def subscribe(listener: Ended) -> None:
    if listener not in _listeners:
        _listeners.append(listener)


def unsubscribe(listener: Ended) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def ended(session: Session, subject: Subject, subject_id: str, status: str) -> None:
    for listener in list(_listeners):
        listener(session, subject, subject_id, status)
