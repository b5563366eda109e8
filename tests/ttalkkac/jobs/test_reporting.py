"""What a running job writes to the store, and what it hands back to the run."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.utils.job_rows import get, messages, new_job, set_running
from ttalkkac import jobs
from ttalkkac.jobs.liveness import Heartbeat
from ttalkkac.store.db import Database


def test_reporter_writes_progress_metrics_and_events(db: Database) -> None:
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


def test_reported_metrics_are_the_latest_values_as_a_copy(db: Database) -> None:
    reporter = jobs.JobReporter(db, new_job(db))
    reporter.metrics({"loss": 2.0, "learning_rate": 1e-4})
    reporter.metrics({"loss": 1.5, "eval_loss": float("nan")})
    seen = reporter.reported_metrics
    assert seen == {"loss": 1.5, "learning_rate": 1e-4, "eval_loss": None}
    seen["loss"] = 99.0  # the caller's copy: the reporter's own record is unchanged
    assert reporter.reported_metrics["loss"] == 1.5


def test_a_superseded_run_writes_nothing_more_and_is_told_to_stop(db: Database) -> None:
    """Another delivery took the job over while this run was paused: fenced, not interleaved."""
    job_id = new_job(db)
    set_running(db, job_id, "host:1")
    reporter = jobs.JobReporter(db, job_id, worker="host:1", progress_every_s=0)
    reporter.progress(step=2, total_steps=10, epoch=0.2)
    assert not reporter.lost and not reporter.should_cancel()
    set_running(db, job_id, "host:2", attempts=2)  # the takeover
    reporter.progress(step=3, total_steps=10, epoch=0.3)
    reporter.metrics({"loss": 9.9})
    assert reporter.lost and reporter.should_cancel()
    reporter.event("late news from the old attempt")
    job = get(db, job_id)
    assert (job.step, job.worker, job.metrics) == (2, "host:2", {})
    assert "late news from the old attempt" not in messages(db, job_id)


def test_the_stop_check_notices_a_takeover_without_any_write(db: Database) -> None:
    job_id = new_job(db)
    set_running(db, job_id, "host:1")
    reporter = jobs.JobReporter(db, job_id, worker="host:1")
    set_running(db, job_id, "requeued:host:9")  # the sweep gave the job to a new delivery
    assert reporter.should_cancel() and reporter.lost


def test_a_store_outage_during_training_is_not_a_failure(tmp_path: Path) -> None:
    """Writes are skipped with a warning; the stop check says go on (recovery decides later)."""
    unreachable = Database(f"sqlite:///{tmp_path / 'no-such-dir' / 'store.db'}")
    reporter = jobs.JobReporter(unreachable, "job_x", worker="host:1", progress_every_s=0)
    reporter.progress(step=1, total_steps=2, epoch=0.5)
    reporter.metrics({"loss": 1.0})
    reporter.event("still training")
    assert reporter.should_cancel() is False and not reporter.lost
    assert reporter.reported_metrics == {"loss": 1.0}


def test_the_heartbeat_stops_and_reports_a_lost_job(db: Database) -> None:
    job_id = new_job(db)
    set_running(db, job_id, "host:2")  # owned by someone else from the start
    lost = threading.Event()
    with Heartbeat(db, job_id, "host:1", 0.05, on_lost=lambda why: lost.set()):
        assert lost.wait(5)
    assert get(db, job_id).worker == "host:2"
