"""The sweep for orphaned jobs: re-enqueued once, live ones left alone, out-of-time ones failed."""

from __future__ import annotations

from datetime import timedelta

from tests.utils.job_rows import get, messages, new_job, set_running
from ttalkkac import jobs
from ttalkkac.jobs.claim import claim_job
from ttalkkac.settings import Settings
from ttalkkac.store import crud
from ttalkkac.store.db import Database
from ttalkkac.store.models import TrainingJob, utcnow


def test_sweep_requeues_orphans_once_and_leaves_live_jobs(
    db: Database, settings: Settings, lost_worker: str
) -> None:
    orphan, other_host_stale, live = new_job(db), new_job(db), new_job(db)
    set_running(db, orphan, lost_worker)
    set_running(db, other_host_stale, "elsewhere:123", age_s=settings.job_stale_after_s + 5)
    set_running(db, live, jobs.process_id())
    sent: list[str] = []
    recovered = jobs.recover_orphaned_jobs(db, settings, enqueue=sent.append)
    assert sorted(recovered) == sorted(sent) == sorted([orphan, other_host_stale])
    assert get(db, orphan).worker.startswith("requeued:")
    # Until that message is consumed (or goes stale) the next sweep sends no duplicate.
    assert jobs.recover_orphaned_jobs(db, settings, enqueue=sent.append) == []
    # The re-enqueued delivery takes the job over even though its marker looks fresh.
    claimed = claim_job(db, settings, orphan, "me:2")
    assert isinstance(claimed, TrainingJob) and claimed.attempts == 2
    assert any("re-enqueued" in m for m in messages(db, orphan))


def test_an_orphan_past_the_time_limit_fails_instead_of_restarting(
    db: Database, settings: Settings, lost_worker: str
) -> None:
    job_id = new_job(db)
    set_running(db, job_id, lost_worker)
    with db.session() as s:
        crud.update_job(
            s, id=job_id, started_at=utcnow() - timedelta(seconds=settings.job_time_limit_s + 1)
        )
    sent: list[str] = []
    assert jobs.recover_orphaned_jobs(db, settings, enqueue=sent.append) == [job_id]
    assert sent == []
    job = get(db, job_id)
    assert (job.status, job.error_type) == ("failed", "TimeLimitExceeded")
