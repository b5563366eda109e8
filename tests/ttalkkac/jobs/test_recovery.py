"""The sweep for orphaned jobs: re-enqueued once, live ones left alone, out-of-time ones failed."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

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


def _age_queued(db: Database, job_id: str, seconds: int) -> None:
    with db.session() as s:
        s.execute(
            update(TrainingJob)
            .where(TrainingJob.id == job_id)
            .values(updated_at=utcnow() - timedelta(seconds=seconds))
        )


def test_a_queued_job_whose_message_was_lost_is_sent_again_once(
    db: Database, settings: Settings
) -> None:
    lost, fresh = new_job(db), new_job(db)
    _age_queued(db, lost, settings.job_resend_queued_after_s + 1)
    sent: list[str] = []
    assert jobs.recover_orphaned_jobs(db, settings, enqueue=sent.append) == [lost]
    assert sent == [lost]
    assert any("its queue message was lost; sent again" in m for m in messages(db, lost))
    # Touched by the resend: the next sweep waits a full interval before sending again.
    assert jobs.recover_orphaned_jobs(db, settings, enqueue=sent.append) == []
    assert get(db, fresh).status == "queued" and sent == [lost]


def test_a_queued_job_waiting_behind_a_running_one_is_not_resent(
    db: Database, settings: Settings
) -> None:
    running, waiting = new_job(db), new_job(db)
    set_running(db, running, jobs.process_id())
    _age_queued(db, waiting, settings.job_resend_queued_after_s + 1)
    sent: list[str] = []
    assert jobs.recover_orphaned_jobs(db, settings, enqueue=sent.append) == []
    assert sent == []


def test_a_broker_refusing_one_job_does_not_stop_the_sweep(
    db: Database, settings: Settings, lost_worker: str
) -> None:
    first, second = new_job(db), new_job(db)
    set_running(db, first, lost_worker)
    set_running(db, second, lost_worker)
    sent: list[str] = []

    def flaky(job_id: str) -> None:
        if job_id == first:
            raise ConnectionError("broker down")
        sent.append(job_id)

    assert jobs.recover_orphaned_jobs(db, settings, enqueue=flaky) == [second]
    assert sent == [second]
    # The refused job keeps its re-enqueue mark; once that goes stale a later sweep sends it.
    with db.session() as s:
        crud.update_job(
            s, id=first, heartbeat_at=utcnow() - timedelta(seconds=settings.job_stale_after_s + 1)
        )
    assert jobs.recover_orphaned_jobs(db, settings, enqueue=sent.append) == [first]


def test_the_sweep_sees_every_active_job_not_a_page(
    db: Database, settings: Settings, lost_worker: str
) -> None:
    """More orphans than a page of GET /train holds (1,000): every one is recovered."""
    with db.session() as s:
        ds = crud.create_dataset(s, name="d", kind="gold", path="/nowhere")
        ids = []
        for _ in range(1001):
            job = crud.create_job(s, dataset_id=ds.id, hyperparameters={}, base_model=None)
            crud.update_job(s, id=job.id, worker=lost_worker, heartbeat_at=utcnow())
            ids.append(job.id)
        s.execute(update(TrainingJob).where(TrainingJob.id.in_(ids)).values(status="running"))
    sent: list[str] = []
    assert len(jobs.recover_orphaned_jobs(db, settings, enqueue=sent.append)) == 1001
    assert sorted(sent) == sorted(ids)
