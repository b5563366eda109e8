"""Domain errors. Raised in the core; ``app/errors.py`` maps each to one HTTP status."""

from __future__ import annotations

from typing import Any


class TtalkkacError(Exception):
    """Base class: a message for the user plus optional structured detail."""

    code = "error"

    def __init__(self, message: str, *, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class NotFound(TtalkkacError):
    code = "not_found"


class Conflict(TtalkkacError):
    code = "conflict"


class InvalidInput(TtalkkacError):
    code = "invalid_input"


class PayloadTooLarge(InvalidInput):
    code = "payload_too_large"


class RetryLater(TtalkkacError):
    """Not now (503): with ``retry_after_s``, when to try again (the Retry-After header)."""

    code = "unavailable"

    def __init__(self, message: str, *, retry_after_s: int | None = None, detail: Any = None):
        super().__init__(message, detail=detail)
        self.retry_after_s = retry_after_s


class EngineUnavailable(RetryLater):
    """The engine is not loaded yet, or too many requests are waiting (retry later)."""

    code = "engine_unavailable"


class DeadlineExceeded(TtalkkacError):
    """A generation ran past GENERATE_TIMEOUT_S; its engine work was aborted."""

    code = "deadline_exceeded"


class GenerationInvalid(TtalkkacError):
    """The model's output did not validate against the plan schema, even after a retry."""

    code = "generation_invalid"


class DataError(InvalidInput):
    """A dataset is unusable (for example the quality filter left no example)."""

    code = "data_error"


class JobCancelled(TtalkkacError):
    code = "cancelled"


class JobInterrupted(TtalkkacError):
    """The worker is shutting down: the run saved a checkpoint and stopped, to be resumed."""

    code = "interrupted"


class NotConfigured(Conflict):
    """A feature needs a setting this deployment does not have (for example NOTION_TOKEN)."""

    code = "not_configured"


class UpstreamRefused(InvalidInput):
    """A service we call (Notion) refused the request; its own message is passed on."""

    code = "upstream_refused"


class UpstreamUnavailable(RetryLater):
    """A service we call is rate limiting or failing after our retries (retry later)."""

    code = "upstream_unavailable"
