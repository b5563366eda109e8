"""Claiming a delivery and the status transitions of the worker side.

``claim_job`` takes a job for this process (``queued -> running``, or a takeover of a running
job whose process is gone), or says with a ``RunOutcome`` why this delivery must not run it. ``fail`` and
``finish_cancelled`` end a job; like every status change they are compare-and-set UPDATEs, so
they do nothing to a job another party has already moved.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Any

from ttalkkac.jobs.liveness import is_requeued, owner_alive
from ttalkkac.jobs.retry import give_up_reason
from ttalkkac.settings import Settings
from ttalkkac.store import crud
from ttalkkac.store.db import Database
from ttalkkac.store.models import JobStatus, TrainingJob, utcnow

logger = logging.getLogger(__name__)

ACTIVE = (JobStatus.running, JobStatus.cancelling)
"""The statuses in which a process owns the job (and may have been lost)."""


class RunOutcome(StrEnum):
    """How one delivery of a job ended; the values are what the worker logs and returns."""

    missing = "missing"  # no such job in the store: the message is dropped
    already_succeeded = "already succeeded"  # the job had ended: nothing to do
    already_failed = "already failed"
    already_cancelled = "already cancelled"
    duplicate = "duplicate"  # a live process runs the job: this delivery is skipped
    lost_race = "lost race"  # another delivery took the job first
    # Another process took the job over during this run (this one was paused or cut off from
    # the store past JOB_STALE_AFTER_S): it stopped without writing anything more.
    superseded = "superseded"
    # The worker is shutting down: a checkpoint was saved and the job handed back to the queue.
    handed_back = "handed back"
    cancelled = "cancelled"
    failed = "failed"
    succeeded = "succeeded"

    @classmethod
    def already(cls, status: JobStatus) -> RunOutcome:
        """The outcome for a delivery of a job that has ended with a terminal ``status``."""
        return cls(f"already {status.value}")


def job_dir(settings: Settings, job_id: str) -> Path:
    """A job's folder (checkpoints, adapter, loss plot): recorded on the row when it starts."""
    return settings.jobs_dir / job_id


def claim_job(db: Database, settings: Settings, job_id: str, me: str) -> TrainingJob | RunOutcome:
    """Take the job for this process, or say why not."""
    with db.session() as session:
        job = crud.get_job(session, id=job_id, for_update=True)
        if job is None:
            logger.warning("[job %s] not in the store; dropping the message", job_id)
            return RunOutcome.missing
        status = JobStatus(job.status)
        if status.terminal:
            logger.info("[job %s] already %s; nothing to do", job_id, status.value)
            return RunOutcome.already(status)
        previous = job.worker  # read now: the CAS below updates ``job`` in the session too
        requeued = is_requeued(previous)
        now = crud.store_now(session)
        if status is JobStatus.cancelling and (requeued or not owner_alive(job, settings, now=now)):
            finish_cancelled(session, job_id, "cancelled (its worker was gone)")
            return RunOutcome.cancelled
        if status in ACTIVE and not requeued and owner_alive(job, settings, now=now):
            logger.info("[job %s] running in %s; duplicate delivery skipped", job_id, job.worker)
            return RunOutcome.duplicate

        if status is JobStatus.queued:
            moved = crud.transition_job(
                session,
                id=job_id,
                from_statuses=[JobStatus.queued],
                to_status=JobStatus.running,
                attempts=job.attempts + 1,
                worker=me,
                heartbeat_at=now,
                started_at=now,
                output_dir=str(job_dir(settings, job_id)),
            )
            message = "job started"
        else:  # running, but its process is gone: a redelivery after a crash
            give_up = give_up_reason(job, previous, settings)
            if give_up is not None:
                fail(session, job_id, *give_up)
                return RunOutcome.failed
            # Conditional on the old owner: two deliveries racing cannot both take the job over.
            moved = crud.transition_job(
                session,
                id=job_id,
                from_statuses=[JobStatus.running],
                to_status=JobStatus.running,
                where=[TrainingJob.worker == previous],
                attempts=job.attempts + 1,
                worker=me,
                heartbeat_at=now,
            )
            message = (
                "restarting the job re-enqueued after its worker was lost"
                if requeued
                else f"worker {previous} was lost; restarting the job"
            )
        if not moved:
            return RunOutcome.lost_race
        session.refresh(job)
        if job.worker != me:
            return RunOutcome.lost_race
        crud.append_event(
            session,
            job_id=job_id,
            message=f"{message} (attempt {job.attempts} of {settings.max_job_attempts}) in {me}",
            data={"attempt": job.attempts, "worker": me},
        )
        return job


def _owned_by(owner: str | None) -> list[Any]:
    return [] if owner is None else [TrainingJob.worker == owner]


def fail(
    session: Any, job_id: str, error_type: str, message: str, *, owner: str | None = None
) -> bool:
    """End a job ``failed`` with the reason, unless it has ended already.

    ``owner``: only while that process owns the job (a run ends its own job, never the one a
    later attempt has taken over).
    """
    moved = crud.transition_job(
        session,
        id=job_id,
        from_statuses=[JobStatus.queued, *ACTIVE],
        to_status=JobStatus.failed,
        where=_owned_by(owner),
        error_type=error_type[:100],
        error_message=message,
        finished_at=utcnow(),
    )
    if moved:
        crud.append_event(
            session,
            job_id=job_id,
            level="error",
            message=f"failed: {error_type}: {message}",
            data={"error_type": error_type, "error_message": message},
        )
    return moved


def finish_cancelled(session: Any, job_id: str, message: str, *, owner: str | None = None) -> bool:
    """End a job ``cancelled`` with an event saying how, unless it has ended already."""
    moved = crud.transition_job(
        session,
        id=job_id,
        from_statuses=[JobStatus.queued, *ACTIVE],
        to_status=JobStatus.cancelled,
        where=_owned_by(owner),
        finished_at=utcnow(),
    )
    if moved:
        crud.append_event(session, job_id=job_id, message=message)
    return moved
