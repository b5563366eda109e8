"""The Celery app of the training worker, built from settings.

Broker: ``ttalkkac.broker.resolve_broker`` (REDIS_URL, else a local Redis, else embedded). No
result backend: a job's state lives in the store. Long GPU jobs shape the configuration:

- ``acks_late`` + ``task_reject_on_worker_lost``: the message is acknowledged only when the task
  returns; if the process running it dies (kill -9, OOM) the worker puts it back at once;
- prefetch 1, concurrency 1, a fresh child per task (``--max-tasks-per-child 1``): one job at a
  time per GPU, and the GPU memory goes back with the child;
- the broker's visibility timeout exceeds the longest job, so a running job is never handed to a
  second worker. When a whole worker dies its unacknowledged message waits out that timeout;
  ``ttalkkac.jobs.recover_orphaned_jobs`` (at start-up and periodically) re-enqueues such jobs
  sooner, and ``run_job``'s idempotency makes the late duplicate harmless.

``celery -A worker.celery_app worker`` builds the app from the environment (``celery_app``
below); ``ttalkkac worker`` does the same with the right options.
"""

from __future__ import annotations

import logging
import threading
from functools import lru_cache
from typing import Any

from celery import Celery
from celery.signals import (
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)

from ttalkkac.broker import resolve_broker
from ttalkkac.settings import Settings, get_settings

logger = logging.getLogger(__name__)

TASK_RUN_TRAINING_JOB = "ttalkkac.run_training_job"
# Redelivery must never start a second copy of a job that is still running.
VISIBILITY_MARGIN_S = 3600


def create_celery_app(settings: Settings) -> Celery:
    broker = resolve_broker(settings)
    app = Celery("ttalkkac", broker=broker.url, set_as_current=False)
    transport: dict[str, Any] = {}
    # Redis-only options: kombu hands the SQLAlchemy transport's options to create_engine(),
    # which refuses unknown keywords, so the embedded broker gets none.
    if broker.kind == "redis":
        transport["visibility_timeout"] = settings.job_time_limit_s + VISIBILITY_MARGIN_S
    if broker.kind == "redis" and settings.broker_key_prefix:
        transport["global_keyprefix"] = settings.broker_key_prefix
    app.conf.update(
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.training_queue,
        task_routes={TASK_RUN_TRAINING_JOB: {"queue": settings.training_queue}},
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_max_tasks_per_child=1,
        task_soft_time_limit=settings.job_time_limit_s,
        task_time_limit=settings.job_time_limit_s + 300,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    app.ttalkkac_settings = settings  # type: ignore[attr-defined]
    app.ttalkkac_broker = broker  # type: ignore[attr-defined]
    from worker.tasks import register_tasks

    register_tasks(app)
    return app


def enqueue_training_job(app: Celery, job_id: str) -> None:
    """Send the job's task (by name, so the sender needs no task code or torch)."""
    settings: Settings = app.ttalkkac_settings  # type: ignore[attr-defined]
    app.send_task(TASK_RUN_TRAINING_JOB, args=[job_id], queue=settings.training_queue)


def _sweep_forever(app: Celery, stop: threading.Event) -> None:
    from ttalkkac.jobs import recover_orphaned_jobs
    from ttalkkac.retention import remove_ended_checkpoints
    from worker.tasks import database

    settings: Settings = app.ttalkkac_settings  # type: ignore[attr-defined]
    while True:
        try:
            recovered = recover_orphaned_jobs(
                database(settings),
                settings,
                enqueue=lambda job_id: enqueue_training_job(app, job_id),
            )
            if recovered:
                logger.warning("recovered orphaned jobs: %s", recovered)
        except Exception:
            logger.exception("orphaned-job sweep failed")
        try:  # jobs ended by the sweep above, by a run, or by the API: their checkpoints
            remove_ended_checkpoints(database(settings), settings)
        except Exception:
            logger.exception("checkpoint sweep failed")
        if stop.wait(settings.job_sweep_interval_s):
            return


@worker_ready.connect(weak=False)
def _start_recovery(sender: Any = None, **_: Any) -> None:
    """In the worker's main process: sweep for orphaned jobs now and every few minutes."""
    app = getattr(sender, "app", None)
    if app is None or not hasattr(app, "ttalkkac_settings"):
        return
    stop = threading.Event()
    app.ttalkkac_sweep_stop = stop
    threading.Thread(
        target=_sweep_forever, args=(app, stop), name="orphan-sweep", daemon=True
    ).start()


@worker_shutting_down.connect(weak=False)
def _stop_running_jobs(sender: Any = None, **_: Any) -> None:
    """SIGTERM at the main process: ask the pool child's job to checkpoint and hand back.

    Celery's warm shutdown then waits for that task, which ends at its current step.
    """
    import os

    from ttalkkac.jobs.shutdown import request_stop_of_children
    from worker.tasks import database

    settings = get_settings()
    try:
        asked = request_stop_of_children(database(settings), settings, os.getpid())
    except Exception:
        logger.exception("could not ask the running jobs to stop")
        return
    if asked:
        logger.warning("shutting down: jobs %s checkpoint and go back to the queue", asked)


@worker_process_shutdown.connect(weak=False)
@worker_shutdown.connect(weak=False)
def _drain_webhooks(**_: Any) -> None:
    """A job's process exits after its one task: let its webhooks finish first (bounded)."""
    from ttalkkac.webhooks import drain

    drain()


def worker_argv(
    settings: Settings, *, loglevel: str = "INFO", hostname: str | None = None
) -> list[str]:
    """Arguments of the training worker: one job at a time, a fresh process for each job."""
    argv = [
        "worker",
        f"--loglevel={loglevel}",
        f"--queues={settings.training_queue}",
        "--concurrency=1",
        "--max-tasks-per-child=1",
        "--pool=prefork",
        "--prefetch-multiplier=1",
        "--without-gossip",
        "--without-mingle",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    return argv


def start_worker(
    settings: Settings, *, loglevel: str = "INFO", hostname: str | None = None
) -> None:
    app = create_celery_app(settings)
    broker = app.ttalkkac_broker  # type: ignore[attr-defined]
    logger.info(
        "training worker: broker %s (%s), queue %s",
        broker.kind,
        broker.reason,
        settings.training_queue,
    )
    app.worker_main(argv=worker_argv(settings, loglevel=loglevel, hostname=hostname))


@lru_cache
def _default_app() -> Celery:
    return create_celery_app(get_settings())


def __getattr__(name: str) -> Celery:
    # ``celery -A worker.celery_app`` finds ``celery_app`` without building it at import time.
    if name in ("celery_app", "app"):
        return _default_app()
    raise AttributeError(name)
