"""What a running job tells the store: events, progress, metrics; and whether to stop."""

from __future__ import annotations

import logging
import time
from typing import Any

from ttalkkac.store import crud
from ttalkkac.store.db import Database
from ttalkkac.store.models import JobStatus, utcnow
from ttalkkac.training.reporter import Reporter

logger = logging.getLogger(__name__)


class JobReporter(Reporter):
    """Writes a run's events, progress and metrics to the store; reads cancel requests."""

    def __init__(self, db: Database, job_id: str, *, progress_every_s: float = 1.0) -> None:
        self.db = db
        self.job_id = job_id
        self.progress_every_s = progress_every_s
        self._last_progress = 0.0
        self._metrics: dict[str, Any] = {}

    @property
    def reported_metrics(self) -> dict[str, Any]:
        """A copy of the metrics reported so far (the latest value of each, JSON-safe)."""
        return dict(self._metrics)

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
        with self.db.session() as session:
            crud.append_event(
                session,
                job_id=self.job_id,
                message=message,
                type=type,
                level=level,
                data=json_safe(data or {}),
            )

    def progress(self, *, step: int, total_steps: int, epoch: float | None) -> None:
        now = time.monotonic()
        if step < total_steps and now - self._last_progress < self.progress_every_s:
            return
        self._last_progress = now
        with self.db.session() as session:
            crud.update_job(
                session,
                id=self.job_id,
                step=step,
                total_steps=total_steps,
                epoch=epoch,
                heartbeat_at=utcnow(),
            )

    def metrics(self, metrics: dict[str, Any]) -> None:
        from ttalkkac.training.report import json_safe

        self._metrics.update(json_safe(metrics))
        with self.db.session() as session:
            crud.update_job(session, id=self.job_id, metrics=dict(self._metrics))

    def should_cancel(self) -> bool:
        with self.db.session() as session:
            return crud.job_status(session, id=self.job_id) == JobStatus.cancelling
