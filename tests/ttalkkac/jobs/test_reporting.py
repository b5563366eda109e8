"""What a running job writes to the store, and what it hands back to the run."""

from __future__ import annotations

from tests.utils.job_rows import get, messages, new_job
from ttalkkac import jobs
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
