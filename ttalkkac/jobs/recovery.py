"""The sweep for orphaned jobs: each worker at start-up and every ``JOB_SWEEP_INTERVAL_S``.

A broker redelivers an unacknowledged message only after its visibility timeout (which must
exceed the longest job), so a job whose process is gone is re-enqueued here, or ended when it
was being cancelled or the retry policy gives up on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ttalkkac.jobs.claim import ACTIVE, fail, finish_cancelled
from ttalkkac.jobs.liveness import owner_alive, process_id, requeued_by
from ttalkkac.jobs.retry import give_up_reason
from ttalkkac.settings import Settings
from ttalkkac.store import crud
from ttalkkac.store.db import Database
from ttalkkac.store.models import JobStatus, utcnow

logger = logging.getLogger(__name__)


def recover_orphaned_jobs(
    db: Database, settings: Settings, *, enqueue: Callable[[str], None]
) -> list[str]:
    """Re-enqueue (or end) jobs left ``running``/``cancelling`` by a process that is gone."""
    recovered: list[str] = []
    with db.session() as session:
        jobs, _ = crud.list_jobs(session, limit=1000, statuses=ACTIVE)
        candidates = [j.id for j in jobs if not owner_alive(j, settings)]
    for job_id in candidates:
        with db.session() as session:
            job = crud.get_job(session, id=job_id, for_update=True)
            if job is None or JobStatus(job.status) not in ACTIVE or owner_alive(job, settings):
                continue
            if job.status == JobStatus.cancelling:
                finish_cancelled(session, job_id, "cancelled (its worker was gone)")
                recovered.append(job_id)
                continue
            give_up = give_up_reason(job, job.worker, settings)
            if give_up is not None:
                fail(session, job_id, *give_up)
                recovered.append(job_id)
                continue
            lost = job.worker
            # Marked fresh so that the next sweep waits for this message instead of piling more.
            crud.update_job(
                session, id=job_id, worker=requeued_by(process_id()), heartbeat_at=utcnow()
            )
            crud.append_event(
                session,
                job_id=job_id,
                level="warning",
                message=f"worker {lost} is gone; job re-enqueued",
                data={"lost_worker": lost, "attempts": job.attempts},
            )
        enqueue(job_id)
        recovered.append(job_id)
        logger.warning("[job %s] orphaned by %s; re-enqueued", job_id, lost)
    return recovered
