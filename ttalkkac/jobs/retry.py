"""The retry policies: whether a job whose process was lost may run again, and how a job's
writes ride out a store outage.

A lost job is retried (resumed from its last checkpoint) until it has used ``MAX_JOB_ATTEMPTS``
or has run past ``JOB_TIME_LIMIT_S`` since it first started; then it ends ``failed`` with the
reason. Asked by the claim of a redelivered job and by the sweep for orphaned jobs.

A job's ending writes (registering its adapter, failing, cancelling, handing back) are retried
with backoff while the store answers with an operational error (a dropped connection, a
database restarting, SQLite's lock timeout), for about a minute; progress and events are
skipped instead (``ttalkkac.jobs.reporting``), since the next step writes them again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from sqlalchemy.exc import OperationalError

from ttalkkac.settings import Settings
from ttalkkac.store.models import TrainingJob, utcnow

logger = logging.getLogger(__name__)

T = TypeVar("T")

STORE_RETRY_DELAYS_S = (0.5, 1, 2, 4, 8, 15, 30)  # about a minute in all


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


def with_store_retries(what: str, write: Callable[[], T]) -> T:
    """``write()``, called again after each delay while it raises ``OperationalError``.

    ``write`` must open its own transaction and be safe to repeat: a commit whose answer was
    lost may have landed, so it re-reads before it changes anything.
    """
    for delay in STORE_RETRY_DELAYS_S:
        try:
            return write()
        except OperationalError as exc:
            logger.warning("%s: the store failed (%s); retrying in %s s", what, exc.orig, delay)
            time.sleep(delay)
    return write()
