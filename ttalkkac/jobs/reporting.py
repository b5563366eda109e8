"""What a running job tells the store: events, progress, metrics; and whether to stop.

Two rules keep a run honest about who owns it:

- **Fenced writes.** Progress and metrics are written only while the job's ``worker`` is still
  this process. A worker that was paused past ``JOB_STALE_AFTER_S`` (or cut off from the store)
  may find its job taken over by another delivery; its next write, heartbeat or stop check
  sees that, the run is marked ``lost`` and stops at the end of its step without writing
  anything more (``RunOutcome.superseded``).
- **A store blip is not a failure.** A write that fails on the connection is logged and
  skipped: the next step writes again, and if the store stays away the heartbeat goes stale and
  recovery takes the job over, which the fencing above then notices.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError

from ttalkkac.store import crud
from ttalkkac.store.db import Database
from ttalkkac.store.models import JobStatus
from ttalkkac.training.reporter import Reporter

logger = logging.getLogger(__name__)

T = TypeVar("T")


class JobReporter(Reporter):
    """Writes a run's events, progress and metrics to the store; reads cancel requests.

    ``worker``: the process that claimed the job (``host:pid``); when given, every write is
    conditional on it still owning the job, and losing the job makes ``should_cancel`` true.
    ``stop_request``: the file whose presence asks the run to checkpoint and stop
    (``ttalkkac.jobs.shutdown``).
    """

    def __init__(
        self,
        db: Database,
        job_id: str,
        *,
        worker: str | None = None,
        stop_request: Path | None = None,
        progress_every_s: float = 1.0,
    ) -> None:
        self.db = db
        self.job_id = job_id
        self.worker = worker
        self.stop_request = stop_request
        self.progress_every_s = progress_every_s
        self._last_progress = 0.0
        self._metrics: dict[str, Any] = {}
        self._lost = threading.Event()

    @property
    def reported_metrics(self) -> dict[str, Any]:
        """A copy of the metrics reported so far (the latest value of each, JSON-safe)."""
        return dict(self._metrics)

    @property
    def lost(self) -> bool:
        """Whether another process owns the job now (this run must stop and write nothing)."""
        return self._lost.is_set()

    def mark_lost(self, why: str = "another process owns the job now") -> None:
        if not self._lost.is_set():
            logger.warning("[job %s] %s (%s): stopping", self.job_id, why, self.worker)
        self._lost.set()

    def _store(self, what: str, write: Callable[[Any], T]) -> T | None:
        """Run ``write`` in a session; a connection failure is logged and answers None."""
        try:
            with self.db.session() as session:
                return write(session)
        except DBAPIError:
            logger.warning(
                "[job %s] %s: the store is unreachable", self.job_id, what, exc_info=True
            )
            return None

    def _owned_update(self, what: str, *, beat: bool = False, **fields: Any) -> None:
        """``beat``: the update is also a heartbeat, stamped by the store's clock."""

        def update(session: Any) -> bool:
            if beat:
                fields["heartbeat_at"] = crud.store_now(session)
            return crud.update_job(session, id=self.job_id, owner=self.worker, **fields)

        updated = self._store(what, update)
        if updated is False and self.worker is not None:
            self.mark_lost(f"{what} found the job owned by another process")

    def event(
        self,
        message: str,
        *,
        type: str = "message",
        level: str = "info",
        data: dict[str, Any] | None = None,
    ) -> None:
        from ttalkkac.training.report import json_safe

        logger.log(
            logging.WARNING if level in ("warning", "error") else logging.INFO,
            "[job %s] %s",
            self.job_id,
            message,
        )
        if self.lost:  # the job's events are the live attempt's story now
            return
        self._store(
            "event",
            lambda s: crud.append_event(
                s,
                job_id=self.job_id,
                message=message,
                type=type,
                level=level,
                data=json_safe(data or {}),
            ),
        )

    def progress(self, *, step: int, total_steps: int, epoch: float | None) -> None:
        now = time.monotonic()
        if step < total_steps and now - self._last_progress < self.progress_every_s:
            return
        self._last_progress = now
        self._owned_update("progress", beat=True, step=step, total_steps=total_steps, epoch=epoch)

    def metrics(self, metrics: dict[str, Any]) -> None:
        from ttalkkac.training.report import json_safe

        self._metrics.update(json_safe(metrics))
        self._owned_update("metrics", metrics=dict(self._metrics))

    def should_cancel(self) -> bool:
        if self.lost:
            return True
        row = self._store("stop check", lambda s: crud.job_status_and_worker(s, id=self.job_id))
        if row is None:  # unreachable store (or a deleted row): keep going, recovery decides
            return False
        status, worker = row
        if self.worker is not None and worker != self.worker:
            self.mark_lost(f"the job is owned by {worker}")
            return True
        return status == JobStatus.cancelling

    def should_interrupt(self) -> bool:
        return self.stop_request is not None and self.stop_request.exists()
