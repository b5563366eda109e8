"""The job service's state machine without a worker: claim, duplicates, takeover, sweep, cancel."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from ttalkkac import jobs
from ttalkkac.errors import Conflict, NotFound
from ttalkkac.settings import Settings
from ttalkkac.store import crud
from ttalkkac.store.db import Database
from ttalkkac.store.models import utcnow
from ttalkkac.training.spec import TrainSpec


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.resolved_database_url)
    database.create_all()
    yield database
    database.dispose()


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def new_job(db: Database) -> str:
    with db.session() as s:
        ds = crud.create_dataset(s, name="d", kind="gold", path="/nowhere")
        return jobs.create_job(s, dataset_id=ds.id, spec=TrainSpec(max_steps=1)).id


def set_running(db: Database, job_id: str, worker: str, *, attempts: int = 1, age_s: int = 0):
    with db.session() as s:
        assert crud.transition_job(
            s,
            id=job_id,
            from_statuses=["queued", "running"],
            to_status="running",
            worker=worker,
            attempts=attempts,
            heartbeat_at=utcnow() - timedelta(seconds=age_s),
        )


def get(db: Database, job_id: str):
    with db.session() as s:
        return crud.get_job(s, id=job_id)


def messages(db: Database, job_id: str) -> list[str]:
    with db.session() as s:
        return [e.message for e in crud.list_events(s, job_id=job_id)]


def test_create_job_needs_a_known_dataset(db: Database) -> None:
    with db.session() as s, pytest.raises(NotFound):
        jobs.create_job(s, dataset_id="ds_missing", spec=TrainSpec())


def test_terminal_and_live_jobs_are_not_run_again(db: Database, settings: Settings) -> None:
    done, live = new_job(db), new_job(db)
    with db.session() as s:
        crud.transition_job(s, id=done, from_statuses=["queued"], to_status="succeeded")
    assert jobs.run_job(db, settings, done) == "already succeeded"
    set_running(db, live, jobs.process_id())  # this very process: alive
    assert jobs.run_job(db, settings, live) == "duplicate"
    assert get(db, live).attempts == 1
    assert jobs.run_job(db, settings, "job_missing") == "missing"


def test_a_dead_owner_is_taken_over_with_attempts_counted(
    db: Database, settings: Settings, dead_pid: int
) -> None:
    job_id = new_job(db)
    lost = f"{jobs.socket.gethostname()}:{dead_pid}"
    set_running(db, job_id, lost)
    claimed = jobs._claim(db, settings, job_id, "me:1")
    assert not isinstance(claimed, str)
    assert (claimed.attempts, claimed.worker, claimed.status) == (2, "me:1", "running")
    assert any(f"worker {lost} was lost" in m for m in messages(db, job_id))


def test_attempts_exhausted_fail_with_the_reason(
    db: Database, settings: Settings, dead_pid: int
) -> None:
    job_id = new_job(db)
    set_running(db, job_id, f"{jobs.socket.gethostname()}:{dead_pid}", attempts=3)
    assert jobs.run_job(db, settings, job_id) == "failed"
    job = get(db, job_id)
    assert (job.status, job.error_type) == ("failed", "WorkerLost")
    assert "MAX_JOB_ATTEMPTS" in job.error_message and job.finished_at is not None


def test_sweep_requeues_orphans_once_and_leaves_live_jobs(
    db: Database, settings: Settings, dead_pid: int
) -> None:
    orphan, other_host_stale, live = new_job(db), new_job(db), new_job(db)
    set_running(db, orphan, f"{jobs.socket.gethostname()}:{dead_pid}")
    set_running(db, other_host_stale, "elsewhere:123", age_s=settings.job_stale_after_s + 5)
    set_running(db, live, jobs.process_id())
    sent: list[str] = []
    recovered = jobs.recover_orphaned_jobs(db, settings, enqueue=sent.append)
    assert sorted(recovered) == sorted(sent) == sorted([orphan, other_host_stale])
    assert get(db, orphan).worker.startswith("requeued:")
    # Until that message is consumed (or goes stale) the next sweep sends no duplicate.
    assert jobs.recover_orphaned_jobs(db, settings, enqueue=sent.append) == []
    # The re-enqueued delivery takes the job over even though its marker looks fresh.
    claimed = jobs._claim(db, settings, orphan, "me:2")
    assert not isinstance(claimed, str) and claimed.attempts == 2
    assert any("re-enqueued" in m for m in messages(db, orphan))


def test_cancel_queued_running_and_finished(
    db: Database, settings: Settings, dead_pid: int
) -> None:
    queued, running, orphaned = new_job(db), new_job(db), new_job(db)
    with db.session() as s:
        assert jobs.cancel_job(s, id=queued).status == "cancelled"
    assert jobs.run_job(db, settings, queued) == "already cancelled"
    set_running(db, running, jobs.process_id())
    with db.session() as s:
        assert jobs.cancel_job(s, id=running).status == "cancelling"
        assert jobs.cancel_job(s, id=running).status == "cancelling"  # idempotent
    reporter = jobs.JobReporter(db, running)
    assert reporter.should_cancel()
    with db.session() as s, pytest.raises(Conflict):
        jobs.cancel_job(s, id=queued)
    # A job cancelled while its worker was gone ends cancelled at the next sweep.
    set_running(db, orphaned, f"{jobs.socket.gethostname()}:{dead_pid}")
    with db.session() as s:
        jobs.cancel_job(s, id=orphaned)
    jobs.recover_orphaned_jobs(db, settings, enqueue=lambda _: None)
    assert get(db, orphaned).status == "cancelled"


def test_reporter_writes_progress_metrics_and_events(db: Database, tmp_path: Path) -> None:
    job_id = new_job(db)
    reporter = jobs.JobReporter(db, job_id, progress_every_s=0)
    reporter.progress(step=3, total_steps=10, epoch=0.5)
    reporter.metrics({"loss": 1.25, "learning_rate": 1e-4})
    reporter.metrics({"eval_loss": float("nan")})
    reporter.event("step 3", type="metrics", data={"loss": 1.25})
    job = get(db, job_id)
    assert (job.step, job.total_steps, job.epoch) == (3, 10, 0.5)
    assert job.metrics == {"loss": 1.25, "learning_rate": 1e-4, "eval_loss": None}
    assert messages(db, job_id) == ["job queued", "step 3"]


def test_an_orphan_past_the_time_limit_fails_instead_of_restarting(
    db: Database, settings: Settings, dead_pid: int
) -> None:
    job_id = new_job(db)
    set_running(db, job_id, f"{jobs.socket.gethostname()}:{dead_pid}")
    with db.session() as s:
        crud.update_job(
            s, id=job_id, started_at=utcnow() - timedelta(seconds=settings.job_time_limit_s + 1)
        )
    sent: list[str] = []
    assert jobs.recover_orphaned_jobs(db, settings, enqueue=sent.append) == [job_id]
    assert sent == []
    job = get(db, job_id)
    assert (job.status, job.error_type) == ("failed", "TimeLimitExceeded")
