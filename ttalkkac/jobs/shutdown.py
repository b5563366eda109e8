"""Graceful stop: a worker shutting down hands its job back instead of losing an attempt.

``docker stop``, a deploy or Ctrl-C sends SIGTERM. Celery's main process then waits for the
task (a warm shutdown) until the container's grace period ends with SIGKILL; without help, a
training run loses everything since its last checkpoint, and three deploys end a job
``failed``. Here a stop request (a file in the job's folder, so that the worker's main process
can ask the pool child that runs the job) makes the run save a checkpoint at the end of its
current step and stop; the job is handed back to the queue without using one of its
``MAX_JOB_ATTEMPTS``, and the next worker resumes it from that step.

The request reaches the run either way a SIGTERM arrives: at the worker's main process
(``request_stop_of_children``, from Celery's ``worker_shutting_down``), or at the child itself
(``stop_on_sigterm`` around the run; Celery resets a child's SIGTERM to "die").
"""

from __future__ import annotations

import logging
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from ttalkkac.jobs.claim import ACTIVE, job_dir
from ttalkkac.settings import Settings
from ttalkkac.store import crud
from ttalkkac.store.db import Database

logger = logging.getLogger(__name__)

STOP_REQUEST_FILE = ".stop-requested"


def stop_request_path(settings: Settings, job_id: str) -> Path:
    return job_dir(settings, job_id) / STOP_REQUEST_FILE


def request_stop(settings: Settings, job_id: str) -> None:
    """Ask the run of ``job_id`` on this host to checkpoint and stop at the end of its step."""
    path = stop_request_path(settings, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    logger.warning("[job %s] stop requested (shutdown): checkpoint, then hand back", job_id)


def clear_stop_request(settings: Settings, job_id: str) -> None:
    stop_request_path(settings, job_id).unlink(missing_ok=True)


def _parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def request_stop_of_children(db: Database, settings: Settings, parent_pid: int) -> list[str]:
    """Ask every job run by a child process of ``parent_pid`` (on this host) to stop."""
    host = socket.gethostname()
    with db.session() as session:
        running = crud.jobs_with_status(session, statuses=ACTIVE)
    asked = []
    for job in running:
        owner_host, _, pid = (job.worker or "").rpartition(":")
        if owner_host == host and pid.isdigit() and _parent_pid(int(pid)) == parent_pid:
            request_stop(settings, job.id)
            asked.append(job.id)
    return asked


@contextmanager
def stop_on_sigterm(settings: Settings, job_id: str) -> Iterator[None]:
    """While the job runs in this process, SIGTERM requests a graceful stop instead of dying."""
    if signal.getsignal(signal.SIGTERM) is None:  # not set from Python: leave it alone
        yield
        return

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        request_stop(settings, job_id)

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread (a thread pool, a test): nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
