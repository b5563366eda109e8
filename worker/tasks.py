"""Thin tasks: pass the job id, re-read the row, hand over to ``ttalkkac.jobs``."""

from __future__ import annotations

import logging
import os

from celery import Celery

from ttalkkac.settings import Settings
from ttalkkac.store.db import Database

logger = logging.getLogger(__name__)

_databases: dict[tuple[int, str], Database] = {}


def database(settings: Settings) -> Database:
    """One store engine per process: a forked child must not reuse its parent's connections."""
    key = (os.getpid(), settings.resolved_database_url)
    if key not in _databases:
        settings.ensure_dirs()
        db = Database(settings.resolved_database_url)
        db.create_all()
        from ttalkkac.webhooks import WebhookSender

        # Jobs this process ends (the job's run, the orphan sweep) send their webhooks from here.
        WebhookSender(db, settings).install()
        _databases[key] = db
    return _databases[key]


def register_tasks(app: Celery) -> None:
    from worker.celery_app import TASK_RUN_TRAINING_JOB

    @app.task(name=TASK_RUN_TRAINING_JOB, acks_late=True, reject_on_worker_lost=True)
    def run_training_job(job_id: str) -> str:
        from ttalkkac.jobs import RunOutcome, run_job
        from ttalkkac.jobs.shutdown import stop_on_sigterm
        from worker.celery_app import enqueue_training_job

        settings: Settings = app.ttalkkac_settings  # type: ignore[attr-defined]
        with stop_on_sigterm(settings, job_id):
            outcome = run_job(database(settings), settings, job_id)
        logger.info("[job %s] delivery ended: %s", job_id, outcome)
        if outcome is RunOutcome.handed_back:
            # The next worker resumes it. If the broker is gone too, the sweep re-sends it once
            # the hand-back mark goes stale (JOB_STALE_AFTER_S).
            try:
                enqueue_training_job(app, job_id)
            except Exception:
                logger.warning("[job %s] could not re-send; the sweep will", job_id, exc_info=True)
        return outcome
