"""The one interface between a training run and whoever watches it (CLI or job worker).

Free of torch and transformers so that the job service can implement it cheaply.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


class Reporter:
    """Receives a run's progress; the base class only logs. Subclasses override what they need."""

    def event(
        self,
        message: str,
        *,
        type: str = "message",
        level: str = "info",
        data: dict[str, Any] | None = None,
    ) -> None:
        log = logger.warning if level in ("warning", "error") else logger.info
        log("%s %s", message, data or "")

    def progress(self, *, step: int, total_steps: int, epoch: float | None) -> None:
        pass

    def metrics(self, metrics: dict[str, Any]) -> None:
        """Latest metrics (train loss, learning rate, eval loss) for the job row."""

    def should_cancel(self) -> bool:
        return False

    def should_interrupt(self) -> bool:
        """Whether to save a checkpoint now and stop (the process is shutting down)."""
        return False
