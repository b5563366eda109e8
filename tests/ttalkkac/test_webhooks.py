"""Job webhooks: signed, sent after the commit, retried, recorded; a local receiver checks them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest
from pydantic import SecretStr, ValidationError

from tests.utils.job_rows import new_job, set_running
from tests.utils.webhook_receiver import SECRET, Receiver
from ttalkkac import webhooks
from ttalkkac.errors import NotConfigured
from ttalkkac.settings import Settings
from ttalkkac.store import crud
from ttalkkac.store.db import Database
from ttalkkac.store.hooks import Subject
from ttalkkac.store.models import JobStatus, utcnow


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def hook_settings(settings: Settings, receiver: Receiver) -> Settings:
    return settings.model_copy(
        update={
            "webhook_secret": SecretStr(SECRET),
            "webhook_urls": [f"{receiver.url}/all-jobs"],
            "webhook_backoff_s": 0.25,
            "webhook_max_attempts": 3,
            "webhook_timeout_s": 5,
            "webhook_allow_private": True,  # the receiver listens on 127.0.0.1
        }
    )


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.resolved_database_url)
    database.create_all()
    yield database
    database.dispose()


@pytest.fixture
def sender(db: Database, hook_settings: Settings) -> Iterator[webhooks.WebhookSender]:
    s = webhooks.WebhookSender(db, hook_settings).install()
    yield s
    s.uninstall()
    assert webhooks.drain(10)


def job_with_hook(db: Database, settings: Settings, url: str) -> str:
    job_id = new_job(db)
    with db.session() as session:
        webhooks.register(session, settings, Subject.training_job, job_id, url=url)
    set_running(db, job_id, "host:1")
    return job_id


def finish(db: Database, job_id: str, status: str = JobStatus.succeeded) -> None:
    with db.session() as session:
        assert crud.transition_job(
            session,
            id=job_id,
            from_statuses=[JobStatus.running],
            to_status=status,
            finished_at=utcnow(),
            adapter_name="tiny-x",
        )


def webhook_events(db: Database, job_id: str) -> list:
    with db.session() as session:
        return [e for e in crud.list_events(session, job_id=job_id) if "webhook" in e.data]


def test_a_finished_job_is_told_signed_to_both_urls(db, hook_settings, receiver, sender) -> None:
    job_id = job_with_hook(db, hook_settings, f"{receiver.url}/mine?token=abc")
    finish(db, job_id)
    assert webhooks.drain(10)
    assert sorted(r["path"] for r in receiver.requests) == ["/all-jobs", "/mine?token=abc"]
    for request in receiver.requests:
        headers, body = request["headers"], request["body"]
        assert webhooks.verify(SECRET, headers["Ttalkkac-Signature"], body)
        assert not webhooks.verify("another secret", headers["Ttalkkac-Signature"], body)
        assert not webhooks.verify(SECRET, headers["Ttalkkac-Signature"], body + b" ")
        payload = json.loads(body)
        assert payload["type"] == headers["Ttalkkac-Event"] == "training_job.succeeded"
        assert payload["id"] == headers["Ttalkkac-Delivery"]
        job = payload["data"]["job"]
        assert job["id"] == job_id and job["status"] == "succeeded"
        assert job["adapter_name"] == "tiny-x" and job["finished_at"]
    events = webhook_events(db, job_id)
    assert len(events) == 2 and all(e.data["webhook"]["delivered"] for e in events)
    # The job's URL is recorded without its query string (it may carry a token).
    assert all("token" not in e.message and "token" not in str(e.data) for e in events)


def test_failures_are_retried_with_backoff_and_recorded(db, hook_settings, receiver) -> None:
    settings = hook_settings.model_copy(update={"webhook_urls": []})
    sender = webhooks.WebhookSender(db, settings).install()
    try:
        receiver.statuses = [500, 503, 200]
        job_id = job_with_hook(db, settings, f"{receiver.url}/mine")
        finish(db, job_id, JobStatus.failed)
        assert webhooks.drain(10)
    finally:
        sender.uninstall()
    assert len(receiver.requests) == 3
    # The backoff is kept between attempts: 0.25 s, then doubled.
    arrivals = [r["at"] for r in receiver.requests]
    assert arrivals[1] - arrivals[0] >= 0.25 and arrivals[2] - arrivals[1] >= 0.5
    assert len({r["headers"]["Ttalkkac-Delivery"] for r in receiver.requests}) == 1
    events = webhook_events(db, job_id)
    assert [e.data["webhook"]["status"] for e in events] == [500, 503, 200]
    assert [e.level for e in events] == ["warning", "warning", "info"]
    assert "retry in 0.25 s" in events[0].message and "retry in 0.5 s" in events[1].message
    assert "training_job.failed" in events[-1].message and "attempt 3/3" in events[-1].message


def test_an_unreachable_receiver_never_fails_the_job(db, hook_settings, sender) -> None:
    job_id = job_with_hook(db, hook_settings, "http://127.0.0.1:9/nobody")
    sender.settings = hook_settings.model_copy(update={"webhook_urls": []})
    finish(db, job_id)
    assert webhooks.drain(30)
    with db.session() as session:
        assert crud.get_job(session, id=job_id).status == JobStatus.succeeded
    events = webhook_events(db, job_id)
    assert [e.data["webhook"]["attempt"] for e in events] == [1, 2, 3]
    assert events[-1].level == "error" and "gave up" in events[-1].message
    assert events[0].data["webhook"]["error"].startswith("ConnectError")


def test_a_clients_url_to_a_private_address_is_refused_not_posted(
    db, hook_settings, receiver, sender
) -> None:
    """Server-side request forgery: a job's own URL may not reach loopback or the LAN."""
    sender.settings = hook_settings.model_copy(update={"webhook_allow_private": False})
    job_id = job_with_hook(db, hook_settings, f"{receiver.url}/mine")
    finish(db, job_id)
    assert webhooks.drain(30)
    # The operator's WEBHOOK_URLS entry (also on 127.0.0.1) is trusted and delivered.
    assert [r["path"] for r in receiver.requests] == ["/all-jobs"]
    refused = [e for e in webhook_events(db, job_id) if "/mine" in e.message]
    assert len(refused) == 1 and refused[0].level == "error"
    assert "127.0.0.1, which is not a public address" in refused[0].data["webhook"]["error"]


@pytest.mark.parametrize(
    ("url", "public"),
    [
        ("http://127.0.0.1:8080/x", False),
        ("http://localhost/x", False),
        ("http://10.1.2.3/x", False),
        ("http://192.168.0.10/x", False),
        ("http://169.254.169.254/latest/meta-data", False),  # cloud metadata
        ("http://[::1]/x", False),
        ("http://[::ffff:127.0.0.1]/x", False),
        ("http://0.0.0.0/x", False),
        ("http://no-such-host.invalid/x", False),
        ("https://8.8.8.8/hook", True),
    ],
)
def test_non_public_addresses_are_named(url: str, public: bool) -> None:
    from ttalkkac.urls import non_public_address

    assert (non_public_address(url) is None) == public


def test_nothing_is_sent_before_the_commit_or_after_a_rollback(
    db, hook_settings, receiver, sender
) -> None:
    job_id = job_with_hook(db, hook_settings, f"{receiver.url}/mine")
    with pytest.raises(RuntimeError), db.session() as session:
        crud.transition_job(session, id=job_id, from_statuses=["running"], to_status="cancelled")
        raise RuntimeError("rolled back")
    assert webhooks.drain(5) and receiver.requests == []

    with db.session() as session:
        crud.transition_job(session, id=job_id, from_statuses=["running"], to_status="cancelled")
        # An event in the same transaction releases a SAVEPOINT: not the commit yet.
        crud.append_event(session, job_id=job_id, message="cancelled by the test")
        time.sleep(0.2)
        assert webhooks.drain(5) and receiver.requests == []
    assert webhooks.drain(10) and len(receiver.requests) == 2
    assert json.loads(receiver.requests[0]["body"])["type"] == "training_job.cancelled"


def test_a_cancelled_queued_job_is_told_by_the_api(hook_settings, receiver) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(hook_settings)) as client:
        db = client.app.state.db
        job_id = new_job(db)
        with db.session() as session:
            webhooks.register(
                session, hook_settings, Subject.training_job, job_id, url=f"{receiver.url}/mine"
            )
        assert client.post(f"/train/{job_id}/cancel").json()["status"] == "cancelled"
        assert webhooks.drain(10)
    assert sorted(r["path"] for r in receiver.requests) == ["/all-jobs", "/mine"]
    assert all(
        webhooks.verify(SECRET, r["headers"]["Ttalkkac-Signature"], r["body"])
        for r in receiver.requests
    )


def test_signature_format_and_replay_window() -> None:
    body = b'{"a":1}'
    header = webhooks.sign(SECRET, 1_700_000_000, body)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert webhooks.verify(SECRET, header, body, now=1_700_000_100)
    assert not webhooks.verify(SECRET, header, body, now=1_700_000_000 + 301)
    assert not webhooks.verify(SECRET, "v1=abc", body)
    assert not webhooks.verify(SECRET, "t=x,v1=abc", body)


def test_urls_are_checked_at_the_edge(settings: Settings, db: Database) -> None:
    from app.schemas import JobCreate

    for bad in ("ftp://host/x", "file:///etc/passwd", "http://", "javascript:alert(1)", "x"):
        with pytest.raises(ValidationError):
            JobCreate(dataset_id="ds_1", webhook_url=bad)
        with pytest.raises(ValidationError):
            Settings(webhook_urls=bad, webhook_secret="s")
    assert JobCreate(dataset_id="ds_1", webhook_url=" https://h/x ").webhook_url == "https://h/x"
    with pytest.raises(ValidationError, match="WEBHOOK_SECRET"):
        Settings(webhook_urls="https://h/x")
    job_id = new_job(db)
    with pytest.raises(NotConfigured), db.session() as session:
        webhooks.register(session, settings, Subject.training_job, job_id, url="https://h/x")


# --- the outbox: deliveries outlive their process ---------------------------------------------


def wait_for(condition: Callable[[], bool], timeout_s: float = 15, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_delivery_outlives_the_process_that_made_it(
    db: Database, hook_settings: Settings, settings: Settings
) -> None:
    down = Receiver()
    url, port = f"{down.url}/mine", down.server.server_address[1]
    down.close()  # the receiver is down when the job ends
    hook_settings = hook_settings.model_copy(update={"webhook_urls": [], "webhook_backoff_s": 1.0})
    first = webhooks.WebhookSender(db, hook_settings).install()
    try:
        job_id = job_with_hook(db, hook_settings, url)
        finish(db, job_id)
        wait_for(lambda: len(webhook_events(db, job_id)) == 1, what="the first attempt")
    finally:
        first.uninstall()  # the process is gone: it makes no more attempts
    assert webhooks.drain(5)
    time.sleep(1.5)  # past the retry's time: nobody is left to make it
    assert len(webhook_events(db, job_id)) == 1

    up = Receiver(port=port)
    restarted = Database(settings.resolved_database_url)  # a new process: its own engine
    second = webhooks.WebhookSender(restarted, hook_settings).install()
    try:
        wait_for(lambda: len(webhook_events(db, job_id)) == 2, what="the retry")
        time.sleep(0.5)
    finally:
        second.uninstall()
        up.close()
        restarted.dispose()
    first_try, retry = webhook_events(db, job_id)
    assert first_try.data["webhook"]["error"].startswith("ConnectError")
    assert "retry in 1 s" in first_try.message
    assert retry.data["webhook"]["attempt"] == 2 and retry.data["webhook"]["delivered"]
    (request,) = up.requests  # delivered once
    delivery = first_try.data["webhook"]["delivery"]
    assert request["headers"]["Ttalkkac-Delivery"] == delivery == retry.data["webhook"]["delivery"]
    assert webhooks.verify(SECRET, request["headers"]["Ttalkkac-Signature"], request["body"])
    assert json.loads(request["body"])["data"]["job"]["id"] == job_id


def test_a_stale_claim_is_taken_over_a_fresh_one_is_not(
    db: Database, hook_settings: Settings, receiver: Receiver
) -> None:
    """A process that died mid-attempt leaves its claim: taken over once it is stale."""
    from datetime import timedelta

    from sqlalchemy import update

    from ttalkkac.store.models import WebhookDelivery

    job_ids = [job_with_hook(db, hook_settings, f"{receiver.url}/job{i}") for i in range(2)]
    with db.session() as session:  # what a process wrote before it died (no sender here)
        for job_id in job_ids:
            crud.transition_job(
                session, id=job_id, from_statuses=["running"], to_status="succeeded"
            )
            ids = webhooks.enqueue(
                session, hook_settings, Subject.training_job, job_id, "succeeded"
            )
            claimed_at = utcnow() - timedelta(hours=1 if job_id == job_ids[0] else 0)
            session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id.in_(ids))
                .values(claim="dead", claimed_at=claimed_at)
            )
    sender = webhooks.WebhookSender(db, hook_settings).install()
    try:
        wait_for(lambda: len(receiver.requests) == 2, what="the stale claims' deliveries")
        time.sleep(0.5)
    finally:
        sender.uninstall()
    assert sorted(r["path"] for r in receiver.requests) == ["/all-jobs", "/job0"]
    assert len(webhook_events(db, job_ids[0])) == 2 and webhook_events(db, job_ids[1]) == []


def test_two_processes_send_each_delivery_once(
    db: Database, hook_settings: Settings, settings: Settings, receiver: Receiver
) -> None:
    other = Database(settings.resolved_database_url)  # a second process on the same store
    senders = [webhooks.WebhookSender(d, hook_settings).install() for d in (db, other)]
    try:
        job_ids = [job_with_hook(db, hook_settings, f"{receiver.url}/job{i}") for i in range(8)]
        with db.session() as session:  # 16 deliveries committed at once, both senders woken
            for job_id in job_ids:
                crud.transition_job(
                    session, id=job_id, from_statuses=["running"], to_status="failed"
                )
        senders[1].wake()
        assert webhooks.drain(30)
    finally:
        for sender in senders:
            sender.uninstall()
        other.dispose()
    deliveries = [r["headers"]["Ttalkkac-Delivery"] for r in receiver.requests]
    assert len(deliveries) == 16 and len(set(deliveries)) == 16
    for job_id in job_ids:
        events = webhook_events(db, job_id)
        assert [e.data["webhook"]["attempt"] for e in events] == [1, 1]
        assert all(e.data["webhook"]["delivered"] for e in events)
