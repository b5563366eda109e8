"""Webhooks: a signed POST when a training job or an evaluation succeeds, fails or is cancelled.

- **To whom.** The job's or evaluation's own ``webhook_url`` (``POST /train``,
  ``POST /evaluations``) and every ``WEBHOOK_URLS`` entry.
- **When.** ``crud.transition_job`` and ``evaluations.transition_evaluation`` tell
  ``ttalkkac.store.hooks`` inside the transaction that ends the subject; the sender then writes
  one row per URL into the outbox (``WebhookDelivery``) in that same transaction, with the body
  as it is at that moment. After the commit it wakes its sender loop, which posts from
  background threads: a receiver that is slow, down or failing never delays, fails or rolls
  back the state change itself.
- **What.** ``{"id": "whd_...", "type": "<subject>.<status>", "created_at": ..., "data":
  {"job": {...}}}`` (``{"evaluation": {...}}`` for an evaluation), UTF-8 JSON, with headers
  ``Ttalkkac-Event``, ``Ttalkkac-Delivery`` (the id, the same on every retry: receivers
  deduplicate on it) and ``Ttalkkac-Signature``.
- **Signature** (the way Stripe signs): ``t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<raw
  body>" keyed with WEBHOOK_SECRET>``. A receiver recomputes it over the raw body, compares in
  constant time and refuses an old ``t`` (replays): ``verify`` does exactly that.
- **Retries.** Up to ``WEBHOOK_MAX_ATTEMPTS``, waiting ``WEBHOOK_BACKOFF_S`` and doubling; a
  2xx answer is a delivery. Every attempt is kept on its outbox row (``GET /evaluations/{id}``
  shows them) and, for a job, appended to its events.
- **Durability.** The outbox is in the store: every process that installs a sender (the API,
  each worker process) claims due deliveries with a compare-and-set, one attempt at a time, so
  a delivery whose process was killed or restarted is made by the next sender to look (at its
  start, then every ``POLL_S``); a claim held longer than an attempt can take is a dead
  process's and is taken over. At shutdown a process waits up to ``SHUTDOWN_WAIT_S`` for the
  deliveries it made (``drain``); what is left stays in the outbox.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.orm import Session

from ttalkkac import __version__
from ttalkkac.errors import InvalidInput, NotConfigured
from ttalkkac.settings import Settings
from ttalkkac.store import crud, outbox
from ttalkkac.store.db import Database
from ttalkkac.store.hooks import Subject, subscribe, unsubscribe
from ttalkkac.store.models import (
    DeliveryState,
    Evaluation,
    EvaluationWebhook,
    JobWebhook,
    TrainingJob,
    new_id,
)
from ttalkkac.urls import non_public_address, redact

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "Ttalkkac-Signature"
EVENT_HEADER = "Ttalkkac-Event"
DELIVERY_HEADER = "Ttalkkac-Delivery"
TOLERANCE_S = 300  # how old a signature ``verify`` accepts
SHUTDOWN_WAIT_S = 60.0
# How often a sender looks for deliveries it was not woken for: another process's (one that
# died, or is busy) and claims gone stale. Its own are sent on the commit that made them.
POLL_S = 5.0
SENDER_THREADS = 4  # attempts in flight per process: one slow receiver does not hold up others
# session.info keys: deliveries written in this transaction, and the subjects they are for
_PENDING = "ttalkkac_webhooks_pending"
_WRITTEN = "ttalkkac_webhooks_written"

_senders: set[WebhookSender] = set()  # this process's, for drain()
_senders_lock = threading.Lock()


def _forget_parents_senders() -> None:
    # A forked child (a Celery pool process) inherits its parent's senders without their
    # threads, and their engine's connections must not be used in it: its drain() is its own.
    global _senders, _senders_lock
    _senders, _senders_lock = set(), threading.Lock()


os.register_at_fork(after_in_child=_forget_parents_senders)


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

_OWN_URL: dict[Subject, type[JobWebhook] | type[EvaluationWebhook]] = {
    Subject.training_job: JobWebhook,
    Subject.evaluation: EvaluationWebhook,
}


def check_client_url(settings: Settings, url: str) -> None:
    """A client's ``webhook_url`` at submission: 409 without WEBHOOK_SECRET, 422 when it resolves
    to a non-public address (unless WEBHOOK_ALLOW_PRIVATE). ``url`` passed ``check_url``."""
    if settings.webhook_secret is None:
        raise NotConfigured(
            "webhook_url needs WEBHOOK_SECRET on the service: every webhook is signed"
        )
    if not settings.webhook_allow_private:
        problem = non_public_address(url)
        if problem is not None:
            raise InvalidInput(f"webhook_url: {problem}")


def register(
    session: Session, settings: Settings, subject: Subject, subject_id: str, *, url: str
) -> None:
    """Keep a job's or evaluation's ``webhook_url`` (checked by ``ttalkkac.urls.check_url``)."""
    if settings.webhook_secret is None:
        raise NotConfigured(
            "webhook_url needs WEBHOOK_SECRET on the service: every webhook is signed"
        )
    model = _OWN_URL[subject]
    key = "job_id" if subject is Subject.training_job else "evaluation_id"
    session.add(model(**{key: subject_id, "url": url}))
    session.flush()


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _error(row: TrainingJob | Evaluation) -> dict[str, Any] | None:
    if row.error_type or row.error_message:
        return {"type": row.error_type, "message": row.error_message}
    return None


def job_payload(job: TrainingJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": job.status,
        "dataset_id": job.dataset_id,
        "base_model": job.base_model,
        "suffix": job.suffix,
        "adapter_name": job.adapter_name,
        "error": _error(job),
        "metrics": job.metrics or {},
        "attempts": job.attempts,
        "created_at": _when(job.created_at),
        "started_at": _when(job.started_at),
        "finished_at": _when(job.finished_at),
    }


def evaluation_payload(evaluation: Evaluation) -> dict[str, Any]:
    return {
        "id": evaluation.id,
        "status": evaluation.status,
        "adapter": evaluation.adapter,
        "dataset_id": evaluation.dataset_id,
        "split": evaluation.split,
        "training_job_id": evaluation.training_job_id,
        "base_model": evaluation.base_model,
        "done": evaluation.done,
        "total": evaluation.total,
        # The aggregate scores (of the finished rows for a failed or cancelled evaluation).
        "summary": evaluation.summary or None,
        "error": _error(evaluation),
        "created_at": _when(evaluation.created_at),
        "started_at": _when(evaluation.started_at),
        "finished_at": _when(evaluation.finished_at),
    }


def enqueue(
    session: Session, settings: Settings, subject: Subject, subject_id: str, status: str
) -> list[str]:
    """Write the outbox rows of a subject that just ended (in its transaction); their ids."""
    if subject is Subject.training_job:
        job = session.get(TrainingJob, subject_id)
        data = None if job is None else {"job": job_payload(job)}
    else:
        evaluation = session.get(Evaluation, subject_id)
        data = None if evaluation is None else {"evaluation": evaluation_payload(evaluation)}
    if data is None:
        return []
    own = session.get(_OWN_URL[subject], subject_id)
    urls = list(dict.fromkeys(([own.url] if own else []) + settings.webhook_urls))
    now = crud.store_now(session)
    event_type = f"{subject.value}.{status}"
    ids = []
    for url in urls:
        delivery = new_id("whd")
        payload = {"id": delivery, "type": event_type, "created_at": now.isoformat(), "data": data}
        outbox.add(
            session,
            id=delivery,
            subject=subject,
            subject_id=subject_id,
            event=event_type,
            url=url,
            client_url=url not in settings.webhook_urls,
            body=json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
            now=now,
        )
        ids.append(delivery)
    return ids


def attempts(session: Session, subject: Subject, subject_id: str) -> list[dict[str, Any]]:
    """Every attempt made for a subject's webhooks, oldest first (URLs redacted)."""
    return [
        entry
        for row in outbox.list_deliveries(session, subject=subject, subject_id=subject_id)
        for entry in row.log or []
    ]


# --- sending -----------------------------------------------------------------------------------


class WebhookSender:
    """Writes the outbox rows of what this process ends, and sends the due ones of the store.

    ``install()`` subscribes it for the sessions of ``db`` (several stores in one process, as in
    the tests, each have their own) and, with WEBHOOK_SECRET set, starts its sender loop: one
    thread that claims due deliveries and hands each attempt to a small pool. ``uninstall()``
    stops both; attempts in flight finish (``drain`` waits for them).
    """

    def __init__(
        self, db: Database, settings: Settings, *, client: httpx.Client | None = None
    ) -> None:
        self.db = db
        self.settings = settings
        self._client = client
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._mine: set[str] = set()  # committed here and not yet seen ended (for drain)
        self._pool: ThreadPoolExecutor | None = None
        self._loop: threading.Thread | None = None

    def install(self) -> WebhookSender:
        subscribe(self._ended)
        event.listen(self.db.sessionmaker, "after_commit", self._after_commit)
        event.listen(self.db.sessionmaker, "after_rollback", self._after_rollback)
        if self.settings.webhook_secret is not None:
            self._pool = ThreadPoolExecutor(SENDER_THREADS, thread_name_prefix="webhook")
            self._loop = threading.Thread(target=self._run, name="webhook-sender", daemon=True)
            self._wake.set()  # first look at once: deliveries a dead process left pending
            self._loop.start()
            with _senders_lock:
                _senders.add(self)
        return self

    def uninstall(self) -> None:
        unsubscribe(self._ended)
        for name, fn in (
            ("after_commit", self._after_commit),
            ("after_rollback", self._after_rollback),
        ):
            if event.contains(self.db.sessionmaker, name, fn):
                event.remove(self.db.sessionmaker, name, fn)
        self._stop.set()
        self._wake.set()
        if self._loop is not None:
            self._loop.join(timeout=5)
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    def wake(self) -> None:
        """Look for due deliveries now (the commit of one made here does this)."""
        self._wake.set()

    # --- in the transaction: the outbox rows, nothing else -------------------------------------

    def _ended(self, session: Session, subject: Subject, subject_id: str, status: str) -> None:
        if session.bind is not self.db.engine or self.settings.webhook_secret is None:
            return
        written = session.info.setdefault(_WRITTEN, set())
        if (subject, subject_id) in written:  # another sender of this store wrote them
            return
        written.add((subject, subject_id))
        session.info.setdefault(_PENDING, []).extend(
            enqueue(session, self.settings, subject, subject_id, status)
        )

    def _after_commit(self, session: Session) -> None:
        # Fired for a SAVEPOINT's release too (crud.append_event uses one): wait for the
        # outermost commit, the one that makes the status change and its deliveries visible.
        if session.get_nested_transaction() is not None:
            return
        session.info.pop(_WRITTEN, None)
        ids = session.info.pop(_PENDING, [])
        if ids:
            with self._lock:
                self._mine.update(ids)
            self._wake.set()

    def _after_rollback(self, session: Session) -> None:
        if session.get_nested_transaction() is None:
            session.info.pop(_WRITTEN, None)
            session.info.pop(_PENDING, None)

    # --- the sender loop -----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # before looking: a wake-up during the look is not lost
            try:
                wait = self._dispatch()
            except Exception:
                logger.exception("webhook sender: could not read the outbox")
                wait = POLL_S
            self._wake.wait(wait)

    def _stale_after(self) -> timedelta:
        # Longer than one attempt can take (its request and its record): a claim older than
        # this is a dead process's.
        return timedelta(seconds=2 * self.settings.webhook_timeout_s + 30)

    def _dispatch(self) -> float:
        """Claim and start what is due; seconds until the next look."""
        assert self._pool is not None
        with self._lock:
            free = SENDER_THREADS - self._in_flight
        if free > 0:
            with self.db.session() as session:
                now = crud.store_now(session)
                claimed = outbox.claim_due(
                    session, now=now, stale_before=now - self._stale_after(), limit=free
                )
            for delivery in claimed:
                with self._lock:
                    self._in_flight += 1
                try:
                    self._pool.submit(self._attempt, delivery)
                except RuntimeError:  # uninstalled meanwhile: the claim goes stale, retried
                    with self._lock:
                        self._in_flight -= 1
        with self.db.session() as session:
            due, now = outbox.next_due(session), crud.store_now(session)
        if due is None:
            return POLL_S
        return min(POLL_S, max(0.0, (due - now).total_seconds()))

    def _attempt(self, delivery: outbox.Claimed) -> None:
        try:
            self._send(delivery)
        except Exception:
            logger.exception("[%s %s] webhook attempt failed", delivery.subject, delivery.id)
        finally:
            with self._lock:
                self._in_flight -= 1
            self._wake.set()  # a free thread, and perhaps a retry to schedule

    def _send(self, delivery: outbox.Claimed) -> None:
        settings = self.settings
        assert settings.webhook_secret is not None
        if delivery.client_url and not settings.webhook_allow_private:
            # A client's URL: checked again, the name may resolve elsewhere than at submission.
            problem = non_public_address(delivery.url)
            if problem is not None:
                self._record(delivery, None, f"refused: {problem}", DeliveryState.refused)
                return
        status, error = None, None
        client = self._client or httpx.Client(timeout=settings.webhook_timeout_s)
        try:
            response = client.post(
                delivery.url,
                content=delivery.body,
                headers={
                    "Content-Type": "application/json; charset=utf-8",
                    "User-Agent": f"ttalkkac/{__version__}",
                    EVENT_HEADER: delivery.event,
                    DELIVERY_HEADER: delivery.id,
                    SIGNATURE_HEADER: sign(
                        settings.webhook_secret.get_secret_value(), int(time.time()), delivery.body
                    ),
                },
            )
            status = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            if self._client is None:
                client.close()
        if status is not None and 200 <= status < 300:
            state = DeliveryState.delivered
        elif delivery.attempt >= settings.webhook_max_attempts:
            state = DeliveryState.gave_up
        else:
            state = DeliveryState.pending
        self._record(delivery, status, error, state)

    def _record(
        self,
        delivery: outbox.Claimed,
        status: int | None,
        error: str | None,
        state: DeliveryState,
    ) -> None:
        attempt, attempts = delivery.attempt, self.settings.webhook_max_attempts
        retry_in_s = self.settings.webhook_backoff_s * 2 ** (attempt - 1)
        outcome = str(status) if status is not None else error
        where, kind = redact(delivery.url), delivery.event
        delivered = state is DeliveryState.delivered
        if delivered:
            message, level = f"webhook {kind} delivered to {where}: {outcome}", "info"
        elif state is DeliveryState.pending:
            message = f"webhook {kind} to {where}: {outcome}; retry in {retry_in_s:g} s"
            level = "warning"
        else:
            message, level = f"webhook {kind} to {where}: {outcome}; gave up", "error"
        entry = {
            "delivery": delivery.id,
            "event": kind,
            "url": where,
            "attempt": attempt,
            "max_attempts": attempts,
            "status": status,
            "error": error,
            "delivered": delivered,
        }
        logger.log(
            logging.getLevelName(level.upper()),
            "[%s %s] %s",
            delivery.subject.value,
            delivery.subject_id,
            message,
        )
        with self.db.session() as session:
            now = crud.store_now(session)
            recorded = outbox.record(
                session,
                claimed=delivery,
                state=state,
                next_attempt_at=now + timedelta(seconds=retry_in_s),
                status=status,
                error=error,
                entry={**entry, "at": now.isoformat()},
            )
            if not recorded:
                logger.warning("[webhook %s] claim taken over: attempt not recorded", delivery.id)
            elif delivery.subject is Subject.training_job and crud.get_job(
                session, id=delivery.subject_id
            ):
                crud.append_event(
                    session,
                    job_id=delivery.subject_id,
                    message=f"{message} (attempt {attempt}/{attempts})",
                    level=level,
                    data={"webhook": entry},
                )
        if recorded and state is not DeliveryState.pending:
            with self._lock:
                self._mine.discard(delivery.id)

    # --- drain ---------------------------------------------------------------------------------

    def _busy(self) -> bool:
        """Attempts in flight, or (while running) deliveries made here still pending."""
        with self._lock:
            if self._in_flight:
                return True
            mine = set(self._mine)
        if self._stop.is_set() or not mine:
            return False
        with self.db.session() as session:
            left = outbox.still_pending(session, ids=mine)
        with self._lock:
            self._mine &= left | (self._mine - mine)  # another sender may have ended some
        return bool(left)


def drain(timeout_s: float = SHUTDOWN_WAIT_S) -> bool:
    """Wait for this process's deliveries (at process shutdown); True when none is left.

    A running sender's: those it wrote, until they end (delivered, given up, refused); a
    stopped one's: the attempts in flight. What is left stays in the outbox for the next sender.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        with _senders_lock:
            senders = list(_senders)
        busy = [s for s in senders if s._busy()]
        with _senders_lock:
            _senders.difference_update(s for s in senders if s not in busy and s._stop.is_set())
        if not busy:
            return True
        if time.monotonic() >= deadline:
            logger.warning("%d webhook sender(s) still busy at shutdown", len(busy))
            return False
        time.sleep(0.05)
