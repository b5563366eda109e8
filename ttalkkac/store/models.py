"""SQLAlchemy models: datasets, training jobs, job events, adapters, evaluations, plans,
webhooks and their deliveries.

Portable across SQLite and PostgreSQL: generic ``JSON`` columns, string ids, and timestamps
that are always timezone-aware UTC when read back (SQLite drops the zone; ``UTCDateTime``
restores it).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from ttalkkac.store.db import Base


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes; always returns them aware (UTC), on SQLite too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    cancelling = "cancelling"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ds"))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))  # "gold" | "chat_jsonl"
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DatasetDeletion(Base):
    """A deleted dataset whose row is kept because ended jobs or evaluations still name it.

    Their ``dataset_id`` foreign keys stay valid (history: which data a job was trained on);
    the files are gone and the store's reads treat the dataset as missing. A table of its own:
    a new table is the one schema change ``create_all`` applies to an existing store.
    """

    __tablename__ = "dataset_deletions"

    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    )
    deleted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class TrainingJob(Base):
    __tablename__ = "training_jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("job"))
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    # None until the worker resolves the default base model for its hardware.
    base_model: Mapped[str | None] = mapped_column(Text, default=None)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    suffix: Mapped[str | None] = mapped_column(String(64), default=None)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued.value, index=True)
    output_dir: Mapped[str | None] = mapped_column(Text, default=None)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    # Progress and the latest metrics, updated by the trainer callbacks.
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer, default=None)
    epoch: Mapped[float | None] = mapped_column(Float, default=None)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    error_type: Mapped[str | None] = mapped_column(String(100), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)

    # Deliveries that started running the job; crash recovery and the attempt limit read it.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # "host:pid" of the process running the job, and its last sign of life.
    worker: Mapped[str | None] = mapped_column(String(200), default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    adapter_name: Mapped[str | None] = mapped_column(String(200), default=None)


class JobEvent(Base):
    """Append-only: rows are inserted, never updated. ``seq`` is 1, 2, ... per job."""

    __tablename__ = "job_events"
    __table_args__ = (UniqueConstraint("job_id", "seq", name="uq_job_events_job_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("training_jobs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    level: Mapped[str] = mapped_column(String(10), default="info")
    type: Mapped[str] = mapped_column(String(10), default="message")  # "message" | "metrics"
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class JobWebhook(Base):
    """The ``webhook_url`` a job was submitted with (a table of its own: a new table is all
    ``create_all`` can add to an existing store, and the URL may carry a secret, so it is kept
    apart from what ``GET /train`` shows)."""

    __tablename__ = "job_webhooks"

    job_id: Mapped[str] = mapped_column(
        ForeignKey("training_jobs.id", ondelete="CASCADE"), primary_key=True
    )
    url: Mapped[str] = mapped_column(Text)


class DeliveryState(StrEnum):
    pending = "pending"  # an attempt is due at next_attempt_at
    delivered = "delivered"  # a 2xx answer
    gave_up = "gave_up"  # WEBHOOK_MAX_ATTEMPTS made, none answered 2xx
    refused = "refused"  # a client's URL that resolves to a non-public address: never posted


class WebhookDelivery(Base):
    """The webhook outbox: one event for one URL, and its attempts so far.

    Inserted in the transaction that ends the job or evaluation (``ttalkkac.webhooks``), so a
    committed status change always has its deliveries and a rolled-back one never does; any
    process with a sender claims the due ones (a compare-and-set on ``claim``), so a delivery
    outlives the process that made it. ``body`` is the exact JSON sent on every attempt.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),)

    # "whd_...": the Ttalkkac-Delivery header and the body's "id", the same on every retry.
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("whd"))
    subject: Mapped[str] = mapped_column(String(20))  # hooks.Subject
    subject_id: Mapped[str] = mapped_column(String(40), index=True)
    event: Mapped[str] = mapped_column(String(40))  # "training_job.succeeded", ...
    url: Mapped[str] = mapped_column(Text)
    # The subject's own webhook_url (a client's, checked for a public address before each
    # attempt), not a WEBHOOK_URLS entry of the operator's.
    client_url: Mapped[bool] = mapped_column(Boolean, default=False)
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(12), default=DeliveryState.pending.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Who is making the next attempt and since when: a claim older than an attempt can take
    # belongs to a process that died mid-attempt, and is taken over.
    claim: Mapped[str | None] = mapped_column(String(40), default=None)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_status: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    # One entry per attempt made (what GET /evaluations/{id} shows; a job's events show them too).
    log: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Adapter(Base):
    __tablename__ = "adapters"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ad"))
    name: Mapped[str] = mapped_column(String(200), unique=True)
    base_model: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("training_jobs.id", ondelete="SET NULL"), default=None
    )
    rank: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    is_active: Mapped[bool] = mapped_column(Boolean, default=False)


# At most one active adapter, enforced by the database on both backends (partial unique index).
Index(
    "uq_adapters_one_active",
    Adapter.is_active,
    unique=True,
    sqlite_where=Adapter.is_active == true(),
    postgresql_where=Adapter.is_active == true(),
)


class Evaluation(Base):
    """One evaluation run: an adapter (or the base model) scored on a dataset's split.

    Rows are written one per finished example (``EvaluationRow``), so a run killed midway
    resumes with the examples it has not finished. Status moves like a training job's
    (``JobStatus``); ``owner`` and ``heartbeat_at`` say which API process runs it.
    """

    __tablename__ = "evaluations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ev"))
    adapter: Mapped[str] = mapped_column(String(200), index=True)  # a name, or "base"
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    split: Mapped[str] = mapped_column(String(16))  # EvalSplit
    max_samples: Mapped[int] = mapped_column(Integer)
    max_meeting_chars: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    # How the dataset is split into train/validation (the training job's, or the defaults).
    selection: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    training_job_id: Mapped[str | None] = mapped_column(
        ForeignKey("training_jobs.id", ondelete="SET NULL"), default=None, index=True
    )
    base_model: Mapped[str | None] = mapped_column(Text, default=None)

    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued.value, index=True)
    total: Mapped[int | None] = mapped_column(Integer, default=None)
    done: Mapped[int] = mapped_column(Integer, default=0)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error_type: Mapped[str | None] = mapped_column(String(100), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)

    attempts: Mapped[int] = mapped_column(Integer, default=0)
    owner: Mapped[str | None] = mapped_column(String(200), default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class EvaluationWebhook(Base):
    """The ``webhook_url`` an evaluation was submitted with (apart, as ``JobWebhook``)."""

    __tablename__ = "evaluation_webhooks"

    evaluation_id: Mapped[str] = mapped_column(
        ForeignKey("evaluations.id", ondelete="CASCADE"), primary_key=True
    )
    url: Mapped[str] = mapped_column(Text)


class EvaluationRow(Base):
    """One scored example of an evaluation; written once (unique per evaluation and index)."""

    __tablename__ = "evaluation_rows"
    __table_args__ = (UniqueConstraint("evaluation_id", "index", name="uq_evaluation_rows_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    evaluation_id: Mapped[str] = mapped_column(ForeignKey("evaluations.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    record_id: Mapped[str] = mapped_column(Text)
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Plan(Base):
    """One plan ``POST /generate`` returned, kept for ``/plans`` (history and Notion pages).

    The meeting itself is not stored, only its SHA-256 (of the prompt text, UTF-8), so a
    client can find the plans of a meeting it holds without the service keeping transcripts.
    """

    __tablename__ = "plans"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("pl"))
    plan: Mapped[dict[str, Any]] = mapped_column(JSON)
    adapter: Mapped[str | None] = mapped_column(String(200), default=None, index=True)
    base_model: Mapped[str] = mapped_column(Text)
    engine: Mapped[str] = mapped_column(String(20))
    meeting_sha256: Mapped[str] = mapped_column(String(64), index=True)
    meeting_chars: Mapped[int] = mapped_column(Integer)
    usage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    chunks: Mapped[int] = mapped_column(Integer, default=1)
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)

    # The Notion page made from the plan (POST /plans/{id}/notion). The id is written as soon
    # as Notion has created the page, before the blocks past the first request are appended,
    # so that a retry resumes that page instead of making a second one.
    notion_page_id: Mapped[str | None] = mapped_column(String(64), default=None)
    notion_page_url: Mapped[str | None] = mapped_column(Text, default=None)
    notion_parent: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    notion_blocks: Mapped[int] = mapped_column(Integer, default=0)  # blocks written so far
    # One publication at a time per plan (a compare-and-set on these): a token and when it
    # was taken, so that a claim left by a dead process expires.
    notion_claim: Mapped[str | None] = mapped_column(String(40), default=None)
    notion_claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
