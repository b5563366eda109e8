"""The retry policy: whether a job whose process was lost may run again.

A lost job is retried (resumed from its last checkpoint) until it has used ``MAX_JOB_ATTEMPTS``
or has run past ``JOB_TIME_LIMIT_S`` since it first started; then it ends ``failed`` with the
reason. Asked by the claim of a redelivered job and by the sweep for orphaned jobs.
"""

from __future__ import annotations

from datetime import timedelta

from ttalkkac.settings import Settings
from ttalkkac.store.models import TrainingJob, utcnow


def give_up_reason(
    job: TrainingJob, lost: str | None, settings: Settings
) -> tuple[str, str] | None:
    """Why an orphaned job must not run again (error type, message): attempts or time used up."""
    if job.attempts >= settings.max_job_attempts:
        return (
            "WorkerLost",
            f"the worker running attempt {job.attempts} of {settings.max_job_attempts} "
            f"({lost}) was lost; giving up (MAX_JOB_ATTEMPTS)",
        )
    limit = timedelta(seconds=settings.job_time_limit_s)
    if job.started_at is not None and utcnow() - job.started_at > limit:
        # The hard time limit kills the process without a word: this is where it is said.
        return (
            "TimeLimitExceeded",
            f"the job started {job.started_at.isoformat()} and ran past JOB_TIME_LIMIT_S "
            f"({settings.job_time_limit_s} s); its worker ({lost}) is gone",
        )
    return None
