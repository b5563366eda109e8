"""Who runs a job and whether that process is still there: the ``worker`` column and heartbeat.

A running job records its process as ``host:pid``; on the same host the pid is checked
directly, from another host only the heartbeat (every ``JOB_HEARTBEAT_S``) is trusted. A job
re-enqueued by the sweep records ``requeued:host:pid`` instead, which no process owns.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from ttalkkac.settings import Settings
from ttalkkac.store import crud
from ttalkkac.store.db import Database
from ttalkkac.store.models import TrainingJob

logger = logging.getLogger(__name__)

_REQUEUED = "requeued"


def process_id() -> str:
    """This process as recorded on the job it runs: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def requeued_by(me: str) -> str:
    """The ``worker`` of a job that ``me`` re-enqueued: no process owns it until it is claimed."""
    return f"{_REQUEUED}:{me}"


def is_requeued(worker: str | None) -> bool:
    """Whether a job's ``worker`` is the marker of a re-enqueue (see ``requeued_by``)."""
    return (worker or "").startswith(f"{_REQUEUED}:")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped by its parent still answers kill(0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def owner_alive(job: TrainingJob, settings: Settings, *, now: datetime) -> bool:
    """Whether the process recorded on a running job is still there, at the store's ``now``."""
    return recorded_process_alive(
        job.worker, job.heartbeat_at, stale_after_s=settings.job_stale_after_s, now=now
    )


def recorded_process_alive(
    owner: str | None,
    heartbeat_at: datetime | None,
    *,
    stale_after_s: float,
    now: datetime,
) -> bool:
    """Whether a ``host:pid`` recorded with a heartbeat (a job's, an evaluation's) still runs.

    ``now`` is the store's clock (``crud.store_now``), which wrote the heartbeat too.
    """
    fresh = heartbeat_at is not None and now - heartbeat_at < timedelta(seconds=stale_after_s)
    if not fresh or not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        return _pid_alive(int(pid))
    return True  # another host (or a pending recovery): trust the heartbeat


class Heartbeat:
    """Records every few seconds that this process still runs the job (for crash recovery).

    A beat that finds the job owned by another process (recovery took it over while this one
    was paused or cut off) calls ``on_lost`` and stops beating.
    """

    def __init__(
        self,
        db: Database,
        job_id: str,
        me: str,
        every_s: float,
        *,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self._stop = threading.Event()
        self._on_lost = on_lost
        self._thread = threading.Thread(
            target=self._run,
            args=(db, job_id, me, every_s),
            name=f"heartbeat-{job_id}",
            daemon=True,
        )

    def _run(self, db: Database, job_id: str, me: str, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                with db.session() as session:
                    owned = crud.touch_job(session, id=job_id, worker=me)
            except Exception:  # a missed beat is not worth killing the job for
                logger.warning("[job %s] heartbeat failed", job_id, exc_info=True)
                continue
            if not owned:
                if self._on_lost is not None:
                    self._on_lost("the heartbeat found the job owned by another process")
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
