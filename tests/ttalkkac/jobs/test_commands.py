"""The API side: submitting a job and cancelling it in each state."""

from __future__ import annotations

import pytest

from tests.utils.job_rows import get, new_job, set_running
from ttalkkac import jobs
from ttalkkac.errors import Conflict, NotFound
from ttalkkac.settings import Settings
from ttalkkac.store.db import Database
from ttalkkac.training.spec import TrainSpec


def test_create_job_needs_a_known_dataset(db: Database) -> None:
    with db.session() as s, pytest.raises(NotFound):
        jobs.create_job(s, dataset_id="ds_missing", spec=TrainSpec())


def test_cancel_queued_running_and_finished(
    db: Database, settings: Settings, lost_worker: str
) -> None:
    queued, running, orphaned = new_job(db), new_job(db), new_job(db)
    with db.session() as s:
        assert jobs.cancel_job(s, id=queued).status == "cancelled"
    assert jobs.run_job(db, settings, queued) is jobs.RunOutcome.already_cancelled
    set_running(db, running, jobs.process_id())
    with db.session() as s:
        assert jobs.cancel_job(s, id=running).status == "cancelling"
        assert jobs.cancel_job(s, id=running).status == "cancelling"  # idempotent
    reporter = jobs.JobReporter(db, running)
    assert reporter.should_cancel()
    with db.session() as s, pytest.raises(Conflict):
        jobs.cancel_job(s, id=queued)
    # A job cancelled while its worker was gone ends cancelled at the next sweep.
    set_running(db, orphaned, lost_worker)
    with db.session() as s:
        jobs.cancel_job(s, id=orphaned)
    jobs.recover_orphaned_jobs(db, settings, enqueue=lambda _: None)
    assert get(db, orphaned).status == "cancelled"
