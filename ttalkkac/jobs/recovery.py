"""The sweep for orphaned jobs: each worker at start-up and every ``JOB_SWEEP_INTERVAL_S``.

A broker redelivers an unacknowledged message only after its visibility timeout (which must
exceed the longest job), so a job whose process is gone is re-enqueued here, or ended when it
was being cancelled or the retry policy gives up on it.

A queued job can lose its message too: the API died between its commit and the send, Redis
restarted without persistence, the embedded broker lost a fetched row in a hard kill. Such a job
would wait forever; the sweep sends it again once it has waited ``JOB_RESEND_QUEUED_AFTER_S``
while no job runs (a job that waits behind a running one is expected to wait). A second message
for a job is harmless: the claim is a compare-and-set, and a late delivery finds the job
running or ended and does nothing.

One job's failure to enqueue (the broker is down) does not stop the sweep for the others; the
job stays marked and a later sweep tries again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from ttalkkac.jobs.claim import ACTIVE, fail, finish_cancelled
from ttalkkac.jobs.liveness import owner_alive, process_id, requeued_by
from ttalkkac.jobs.retry import give_up_reason
from ttalkkac.settings import Settings
from ttalkkac.store import crud
from ttalkkac.store.db import Database
from ttalkkac.store.models import JobStatus, TrainingJob, utcnow

logger = logging.getLogger(__name__)


def recover_orphaned_jobs(
    db: Database, settings: Settings, *, enqueue: Callable[[str], None]
) -> list[str]:
    """Re-enqueue (or end) jobs left ``running``/``cancelling`` by a process that is gone, and
    send again the queued jobs whose message was lost. Returns the ids acted on."""
    with db.session() as session:
        active = crud.jobs_with_status(session, statuses=ACTIVE)
        now = crud.store_now(session)
        orphans = [j.id for j in active if not owner_alive(j, settings, now=now)]
        anything_runs = len(orphans) < len(active)
    recovered = [job_id for job_id in orphans if _recover(db, settings, job_id, enqueue)]
    if not anything_runs:
        recovered += _resend_waiting(db, settings, enqueue)
    return recovered


def _recover(db: Database, settings: Settings, job_id: str, enqueue: Callable[[str], None]) -> bool:
    with db.session() as session:
        job = crud.get_job(session, id=job_id, for_update=True)
        now = crud.store_now(session)
        if (
            job is None
            or JobStatus(job.status) not in ACTIVE
            or owner_alive(job, settings, now=now)
        ):
            return False
        if job.status == JobStatus.cancelling:
            finish_cancelled(session, job_id, "cancelled (its worker was gone)")
            return True
        give_up = give_up_reason(job, job.worker, settings)
        if give_up is not None:
            fail(session, job_id, *give_up)
            return True
        lost = job.worker
        # Marked fresh so that the next sweep waits for this message instead of piling more; if
        # the send below fails, the mark goes stale and a later sweep sends again.
        crud.update_job(session, id=job_id, worker=requeued_by(process_id()), heartbeat_at=now)
        crud.append_event(
            session,
            job_id=job_id,
            level="warning",
            message=f"worker {lost} is gone; job re-enqueued",
            data={"lost_worker": lost, "attempts": job.attempts},
        )
    if not _send(job_id, enqueue):
        return False
    logger.warning("[job %s] orphaned by %s; re-enqueued", job_id, lost)
    return True


def _resend_waiting(db: Database, settings: Settings, enqueue: Callable[[str], None]) -> list[str]:
    waited = timedelta(seconds=settings.job_resend_queued_after_s)
    with db.session() as session:
        waiting = crud.jobs_with_status(
            session, statuses=[JobStatus.queued], updated_before=utcnow() - waited
        )
        ids = [j.id for j in waiting]
    resent: list[str] = []
    for job_id in ids:
        with db.session() as session:
            # Touched (updated_at) so that the next resend waits a full interval again.
            moved = crud.transition_job(
                session,
                id=job_id,
                from_statuses=[JobStatus.queued],
                to_status=JobStatus.queued,
                where=[TrainingJob.updated_at < utcnow() - waited],
            )
            if not moved:
                continue
            crud.append_event(
                session,
                job_id=job_id,
                level="warning",
                message=(
                    f"queued for over {settings.job_resend_queued_after_s} s while no job ran: "
                    "its queue message was lost; sent again"
                ),
            )
        if _send(job_id, enqueue):
            logger.warning("[job %s] queued with no message; sent again", job_id)
            resent.append(job_id)
    return resent


def _send(job_id: str, enqueue: Callable[[str], None]) -> bool:
    try:
        enqueue(job_id)
    except Exception:
        logger.warning("[job %s] could not enqueue; the next sweep retries", job_id, exc_info=True)
        return False
    return True
