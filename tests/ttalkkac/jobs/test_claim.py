"""Claiming a delivery: terminal and live jobs are left alone, dead owners taken over or failed."""

from __future__ import annotations

from tests.utils.job_rows import get, messages, new_job, set_running
from ttalkkac import jobs
from ttalkkac.jobs.claim import RunOutcome, claim_job
from ttalkkac.settings import Settings
from ttalkkac.store import crud
from ttalkkac.store.db import Database
from ttalkkac.store.models import TERMINAL_STATUSES, TrainingJob


def test_terminal_and_live_jobs_are_not_run_again(db: Database, settings: Settings) -> None:
    done, live = new_job(db), new_job(db)
    with db.session() as s:
        crud.transition_job(s, id=done, from_statuses=["queued"], to_status="succeeded")
    assert jobs.run_job(db, settings, done) is RunOutcome.already_succeeded
    set_running(db, live, jobs.process_id())  # this very process: alive
    assert jobs.run_job(db, settings, live) is RunOutcome.duplicate
    assert get(db, live).attempts == 1
    assert jobs.run_job(db, settings, "job_missing") is RunOutcome.missing


def test_a_dead_owner_is_taken_over_with_attempts_counted(
    db: Database, settings: Settings, lost_worker: str
) -> None:
    job_id = new_job(db)
    set_running(db, job_id, lost_worker)
    claimed = claim_job(db, settings, job_id, "me:1")
    assert isinstance(claimed, TrainingJob)
    assert (claimed.attempts, claimed.worker, claimed.status) == (2, "me:1", "running")
    assert any(f"worker {lost_worker} was lost" in m for m in messages(db, job_id))


def test_attempts_exhausted_fail_with_the_reason(
    db: Database, settings: Settings, lost_worker: str
) -> None:
    job_id = new_job(db)
    set_running(db, job_id, lost_worker, attempts=3)
    assert jobs.run_job(db, settings, job_id) is RunOutcome.failed
    job = get(db, job_id)
    assert (job.status, job.error_type) == ("failed", "WorkerLost")
    assert "MAX_JOB_ATTEMPTS" in job.error_message and job.finished_at is not None


def test_outcomes_read_as_the_worker_logs_them() -> None:
    # The worker logs and returns the value: it stays the words the logs have always had.
    assert f"{RunOutcome.lost_race}" == "lost race" and RunOutcome.duplicate == "duplicate"
    assert {RunOutcome.already(s) for s in TERMINAL_STATUSES} == {
        RunOutcome.already_succeeded,
        RunOutcome.already_failed,
        RunOutcome.already_cancelled,
    }
    assert RunOutcome.already_cancelled == "already cancelled"
