"""Job webhooks: a signed POST when a training job succeeds, fails or is cancelled.

- **To whom.** The job's own ``webhook_url`` (``POST /train``) and every ``WEBHOOK_URLS`` entry.
- **When.** After the transaction that moved the job commits. ``crud.transition_job`` tells
  ``ttalkkac.store.hooks`` inside the transaction; the sender only notes the job there and
  starts its deliveries once the commit has happened, in background threads. A receiver that
  is slow, down or failing never delays, fails or rolls back the job's own state change.
- **What.** ``{"id": "whd_...", "type": "training_job.<status>", "created_at": ..., "data":
  {"job": {...}}}``, UTF-8 JSON, with headers ``Ttalkkac-Event``, ``Ttalkkac-Delivery`` (the id,
  the same on every retry: receivers deduplicate on it) and ``Ttalkkac-Signature``.
- **Signature** (the way Stripe signs): ``t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<raw
  body>" keyed with WEBHOOK_SECRET>``. A receiver recomputes it over the raw body, compares in
  constant time and refuses an old ``t`` (replays): ``verify`` does exactly that.
- **Retries.** Up to ``WEBHOOK_MAX_ATTEMPTS``, waiting ``WEBHOOK_BACKOFF_S`` and doubling; a
  2xx answer is a delivery. Every attempt is appended to the job's events.
- **Durability.** Deliveries live in the process that committed the change (the worker's job
  process, the API for a cancelled queued job, the worker's sweep). At shutdown it waits up to
  ``SHUTDOWN_WAIT_S`` for them (``drain``); a process killed meanwhile loses the attempts left,
  and the job's events show the ones made.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.orm import Session

from ttalkkac import __version__
from ttalkkac.errors import NotConfigured
from ttalkkac.settings import Settings
from ttalkkac.store import crud, hooks
from ttalkkac.store.db import Database
from ttalkkac.store.models import JobWebhook, TrainingJob, utcnow
from ttalkkac.urls import non_public_address, redact

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "Ttalkkac-Signature"
EVENT_HEADER = "Ttalkkac-Event"
DELIVERY_HEADER = "Ttalkkac-Delivery"
TOLERANCE_S = 300  # how old a signature ``verify`` accepts
SHUTDOWN_WAIT_S = 60.0
_PENDING = "ttalkkac_webhooks_pending"  # session.info key: jobs ended in this transaction

_threads: set[threading.Thread] = set()
_threads_lock = threading.Lock()


# --- signing -----------------------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Ttalkkac-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance_s: float = TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """What a receiver does: the signature matches the raw body and is recent."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, v) for v in fields.get("v1", []))


# --- submitting --------------------------------------------------------------------------------


def register(session: Session, settings: Settings, *, job_id: str, url: str) -> None:
    """Keep a job's ``webhook_url`` (``url`` already checked by ``ttalkkac.urls.check_url``)."""
    if settings.webhook_secret is None:
        raise NotConfigured(
            "webhook_url needs WEBHOOK_SECRET on the service: every webhook is signed"
        )
    session.add(JobWebhook(job_id=job_id, url=url))
    session.flush()


def job_payload(job: TrainingJob) -> dict[str, Any]:
    error = None
    if job.error_type or job.error_message:
        error = {"type": job.error_type, "message": job.error_message}

    def when(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": job.id,
        "status": job.status,
        "dataset_id": job.dataset_id,
        "base_model": job.base_model,
        "suffix": job.suffix,
        "adapter_name": job.adapter_name,
        "error": error,
        "metrics": job.metrics or {},
        "attempts": job.attempts,
        "created_at": when(job.created_at),
        "started_at": when(job.started_at),
        "finished_at": when(job.finished_at),
    }


# --- sending -----------------------------------------------------------------------------------


class WebhookSender:
    """Sends the webhooks of the jobs this process moves to a terminal status, after commit.

    ``install()`` subscribes it for the sessions of ``db`` (several stores in one process, as in
    the tests, each have their own); ``uninstall()`` undoes that.
    """

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        client: httpx.Client | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.sleep = sleep
        self._client = client

    def install(self) -> WebhookSender:
        hooks.subscribe(self._job_ended)
        event.listen(self.db.sessionmaker, "after_commit", self._after_commit)
        event.listen(self.db.sessionmaker, "after_rollback", self._after_rollback)
        return self

    def uninstall(self) -> None:
        hooks.unsubscribe(self._job_ended)
        for name, fn in (
            ("after_commit", self._after_commit),
            ("after_rollback", self._after_rollback),
        ):
            if event.contains(self.db.sessionmaker, name, fn):
                event.remove(self.db.sessionmaker, name, fn)

    # --- in the transaction: note the job, nothing else ----------------------------------------

    def _job_ended(self, session: Session, job_id: str, status: str) -> None:
        if session.bind is not self.db.engine or self.settings.webhook_secret is None:
            return
        session.info.setdefault(_PENDING, []).append((job_id, status))

    def _after_commit(self, session: Session) -> None:
        # Fired for a SAVEPOINT's release too (crud.append_event uses one): wait for the
        # outermost commit, the one that makes the status change visible.
        if session.get_nested_transaction() is not None:
            return
        for job_id, status in session.info.pop(_PENDING, []):
            self.deliver_later(job_id, status)

    def _after_rollback(self, session: Session) -> None:
        if session.get_nested_transaction() is None:
            session.info.pop(_PENDING, None)

    # --- after the commit ----------------------------------------------------------------------

    def deliver_later(self, job_id: str, status: str) -> None:
        thread = threading.Thread(
            target=self._deliver_all, args=(job_id, status), name=f"webhook-{job_id}", daemon=True
        )
        with _threads_lock:
            _threads.add(thread)
        thread.start()

    def _deliver_all(self, job_id: str, status: str) -> None:
        try:
            with self.db.session() as session:
                job = crud.get_job(session, id=job_id)
                hook = session.get(JobWebhook, job_id)
                if job is None:
                    return
                payload = {
                    "id": f"whd_{uuid.uuid4().hex[:16]}",
                    "type": f"training_job.{status}",
                    "created_at": utcnow().isoformat(),
                    "data": {"job": job_payload(job)},
                }
            urls = list(dict.fromkeys(([hook.url] if hook else []) + self.settings.webhook_urls))
            body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            for url in urls:
                self._deliver(job_id, url, payload["id"], payload["type"], body)
        except Exception:
            logger.exception("[job %s] webhook delivery failed unexpectedly", job_id)
        finally:
            with _threads_lock:
                _threads.discard(threading.current_thread())

    def _deliver(self, job_id: str, url: str, delivery: str, kind: str, body: bytes) -> bool:
        assert self.settings.webhook_secret is not None
        if url not in self.settings.webhook_urls and not self.settings.webhook_allow_private:
            # A client's URL: checked again, the name may resolve elsewhere than at submission.
            problem = non_public_address(url)
            if problem is not None:
                self._record(
                    job_id,
                    url=url,
                    delivery=delivery,
                    kind=kind,
                    attempt=1,
                    status=None,
                    error=f"refused: {problem}",
                    delivered=False,
                    retry_in_s=None,
                )
                return False
        secret = self.settings.webhook_secret.get_secret_value()
        attempts = self.settings.webhook_max_attempts
        client = self._client or httpx.Client(timeout=self.settings.webhook_timeout_s)
        try:
            for attempt in range(1, attempts + 1):
                status, error = None, None
                try:
                    response = client.post(
                        url,
                        content=body,
                        headers={
                            "Content-Type": "application/json; charset=utf-8",
                            "User-Agent": f"ttalkkac/{__version__}",
                            EVENT_HEADER: kind,
                            DELIVERY_HEADER: delivery,
                            SIGNATURE_HEADER: sign(secret, int(time.time()), body),
                        },
                    )
                    status = response.status_code
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"[:300]
                delivered = status is not None and 200 <= status < 300
                wait = self.settings.webhook_backoff_s * 2 ** (attempt - 1)
                last = delivered or attempt == attempts
                self._record(
                    job_id,
                    url=url,
                    delivery=delivery,
                    kind=kind,
                    attempt=attempt,
                    status=status,
                    error=error,
                    delivered=delivered,
                    retry_in_s=None if last else wait,
                )
                if last:
                    return delivered
                self.sleep(wait)
            return False
        finally:
            if self._client is None:
                client.close()

    def _record(
        self,
        job_id: str,
        *,
        url: str,
        delivery: str,
        kind: str,
        attempt: int,
        status: int | None,
        error: str | None,
        delivered: bool,
        retry_in_s: float | None,
    ) -> None:
        attempts = self.settings.webhook_max_attempts
        outcome = str(status) if status is not None else error
        where = redact(url)
        if delivered:
            message, level = f"webhook {kind} delivered to {where}: {outcome}", "info"
        elif retry_in_s is not None:
            message = f"webhook {kind} to {where}: {outcome}; retry in {retry_in_s:g} s"
            level = "warning"
        else:
            message, level = f"webhook {kind} to {where}: {outcome}; gave up", "error"
        data = {
            "webhook": {
                "delivery": delivery,
                "event": kind,
                "url": where,
                "attempt": attempt,
                "max_attempts": attempts,
                "status": status,
                "error": error,
                "delivered": delivered,
            }
        }
        logger.log(logging.getLevelName(level.upper()), "[job %s] %s", job_id, message)
        try:
            with self.db.session() as session:
                crud.append_event(
                    session,
                    job_id=job_id,
                    message=f"{message} (attempt {attempt}/{attempts})",
                    level=level,
                    data=data,
                )
        except Exception:
            logger.exception("[job %s] could not record a webhook attempt", job_id)


def drain(timeout_s: float = SHUTDOWN_WAIT_S) -> bool:
    """Wait for the deliveries in flight (at process shutdown); True when none is left."""
    deadline = time.monotonic() + timeout_s
    while True:
        with _threads_lock:
            alive = [t for t in _threads if t.is_alive()]
        if not alive:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            logger.warning("%d webhook delivery thread(s) still running at shutdown", len(alive))
            return False
        alive[0].join(timeout=min(remaining, 1.0))
