"""Keyword-only CRUD over the store. Callers own the session (and so the transaction)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, exists, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ttalkkac.errors import Conflict, NotFound
from ttalkkac.store import hooks
from ttalkkac.store.models import (
    TERMINAL_STATUSES,
    Adapter,
    Dataset,
    DatasetDeletion,
    Evaluation,
    JobEvent,
    JobStatus,
    TrainingJob,
    utcnow,
)

logger = logging.getLogger(__name__)

# --- datasets --------------------------------------------------------------------------------


def create_dataset(
    session: Session,
    *,
    name: str,
    kind: str,
    path: str,
    size_bytes: int = 0,
    stats: dict[str, Any] | None = None,
    id: str | None = None,
) -> Dataset:
    dataset = Dataset(name=name, kind=kind, path=path, size_bytes=size_bytes, stats=stats or {})
    if id is not None:
        dataset.id = id
    session.add(dataset)
    session.flush()
    return dataset


def get_dataset(session: Session, *, id: str) -> Dataset | None:
    """The dataset, or None when there is none or it was deleted (see ``delete_dataset``)."""
    dataset = session.get(Dataset, id)
    if dataset is None or session.get(DatasetDeletion, id) is not None:
        return None
    return dataset


def _not_deleted() -> Any:
    return ~exists().where(DatasetDeletion.dataset_id == Dataset.id)


def list_datasets(
    session: Session, *, offset: int = 0, limit: int = 100
) -> tuple[list[Dataset], int]:
    count = session.scalar(select(func.count()).select_from(Dataset).where(_not_deleted())) or 0
    rows = session.scalars(
        select(Dataset)
        .where(_not_deleted())
        .order_by(Dataset.created_at.desc(), Dataset.id)
        .offset(offset)
        .limit(limit)
    ).all()
    return list(rows), count


def delete_dataset(session: Session, *, id: str) -> bool:
    """Delete a dataset's row; True when this call deleted it (False: none, or deleted already).

    Ended jobs and evaluations keep naming the data they used (their ``dataset_id`` foreign
    keys): while any row does, the dataset row stays, marked deleted (``DatasetDeletion``), and
    every read treats it as missing. Otherwise the row goes. Callers check first that no
    queued or running job or evaluation still needs it.
    """
    if get_dataset(session, id=id) is None:
        return False
    referenced = session.scalar(
        select(
            exists().where(TrainingJob.dataset_id == id)
            | exists().where(Evaluation.dataset_id == id)
        )
    )
    if not referenced:
        return session.execute(delete(Dataset).where(Dataset.id == id)).rowcount == 1
    try:
        with session.begin_nested():
            session.add(DatasetDeletion(dataset_id=id))
    except IntegrityError:  # a concurrent delete marked it first
        return False
    return True


# --- training jobs ---------------------------------------------------------------------------


def create_job(
    session: Session,
    *,
    dataset_id: str,
    base_model: str | None,
    hyperparameters: dict[str, Any],
    suffix: str | None = None,
    id: str | None = None,
) -> TrainingJob:
    job = TrainingJob(
        dataset_id=dataset_id,
        base_model=base_model,
        hyperparameters=hyperparameters,
        suffix=suffix,
        status=JobStatus.queued.value,
    )
    if id is not None:
        job.id = id
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, *, id: str, for_update: bool = False) -> TrainingJob | None:
    if not for_update:
        return session.get(TrainingJob, id)
    # Row lock on PostgreSQL; SQLite serialises writers anyway and ignores FOR UPDATE.
    return session.scalars(
        select(TrainingJob).where(TrainingJob.id == id).with_for_update()
    ).one_or_none()


def list_jobs(
    session: Session,
    *,
    offset: int = 0,
    limit: int = 100,
    statuses: Iterable[str] | None = None,
) -> tuple[list[TrainingJob], int]:
    """Newest first."""
    where = []
    if statuses is not None:
        where.append(TrainingJob.status.in_([str(s) for s in statuses]))
    return newest_first(session, TrainingJob, where=where, offset=offset, limit=limit)


def jobs_with_status(
    session: Session, *, statuses: Iterable[str], updated_before: datetime | None = None
) -> list[TrainingJob]:
    """Every job in ``statuses`` (oldest first), for the sweep: not a page, none is skipped."""
    where = [TrainingJob.status.in_([str(s) for s in statuses])]
    if updated_before is not None:
        where.append(TrainingJob.updated_at < updated_before)
    return list(
        session.scalars(select(TrainingJob).where(*where).order_by(TrainingJob.created_at)).all()
    )


def jobs_using_dataset(session: Session, *, dataset_id: str, statuses: Iterable[str]) -> list[str]:
    """Ids of the jobs in ``statuses`` that train on ``dataset_id``."""
    return list(
        session.scalars(
            select(TrainingJob.id).where(
                TrainingJob.dataset_id == dataset_id,
                TrainingJob.status.in_([str(s) for s in statuses]),
            )
        ).all()
    )


def delete_job(session: Session, *, id: str) -> bool:
    """Delete an ended job whose adapter is not registered; True when this call deleted it.

    One conditional DELETE, so a job cannot be deleted while it still runs or once an adapter
    names it. The schema's ON DELETE rules do the rest in the same statement: the job's events
    go with it, evaluations keep their rows with ``training_job_id`` set to NULL.
    """
    result = session.execute(
        delete(TrainingJob).where(
            TrainingJob.id == id,
            TrainingJob.status.in_([s.value for s in TERMINAL_STATUSES]),
            ~exists().where(Adapter.job_id == id),
        )
    )
    return result.rowcount == 1


def job_statuses_and_hyperparameters(
    session: Session, *, ids: Iterable[str]
) -> dict[str, tuple[str, dict]]:
    """The status and stored hyperparameters of each job of ``ids`` that exists."""
    wanted, found = list(ids), {}
    for start in range(0, len(wanted), 500):  # bounded IN lists: every driver takes 500
        chunk = wanted[start : start + 500]
        rows = session.execute(
            select(TrainingJob.id, TrainingJob.status, TrainingJob.hyperparameters).where(
                TrainingJob.id.in_(chunk)
            )
        )
        found.update({row[0]: (row[1], row[2] or {}) for row in rows})
    return found


def newest_first(
    session: Session, model: Any, *, where: list[Any], offset: int, limit: int
) -> tuple[list[Any], int]:
    """A page of ``model`` rows, newest first, and the count of all that match ``where``."""
    count = session.scalar(select(func.count()).select_from(model).where(*where)) or 0
    rows = session.scalars(
        select(model)
        .where(*where)
        .order_by(model.created_at.desc(), model.id.desc())
        .offset(offset)
        .limit(limit)
    ).all()
    return list(rows), count


def transition_job(
    session: Session,
    *,
    id: str,
    from_statuses: Iterable[str],
    to_status: str,
    where: Iterable[Any] = (),
    **fields: Any,
) -> bool:
    """Compare-and-set of a job's status (plus other columns); True when this call moved it.

    A single conditional UPDATE, so two processes racing (the API cancelling, the worker
    finishing) cannot both win. ``where``: extra conditions (for example the owning worker).
    """
    moved = compare_and_set(
        session,
        TrainingJob,
        id=id,
        from_statuses=from_statuses,
        to_status=to_status,
        where=where,
        **fields,
    )
    if moved and JobStatus(to_status).terminal:
        hooks.ended(session, hooks.Subject.training_job, id, str(to_status))  # webhooks
    return moved


def compare_and_set(
    session: Session,
    model: Any,
    *,
    id: str,
    from_statuses: Iterable[str],
    to_status: str,
    where: Iterable[Any] = (),
    **fields: Any,
) -> bool:
    """One conditional UPDATE of a row's status (jobs, evaluations); True when it moved."""
    result = session.execute(
        update(model)
        .where(model.id == id, model.status.in_([str(s) for s in from_statuses]), *where)
        .values(status=str(to_status), updated_at=utcnow(), **fields)
    )
    return result.rowcount == 1


def update_job(session: Session, *, id: str, owner: str | None = None, **fields: Any) -> bool:
    """Progress and bookkeeping columns; never the status (use ``transition_job``).

    ``owner``: only while that process still owns the job (a superseded worker writes nothing).
    True when the row was updated.
    """
    if "status" in fields:
        raise ValueError("use transition_job to change a job's status")
    condition = [TrainingJob.id == id]
    if owner is not None:
        condition.append(TrainingJob.worker == owner)
    result = session.execute(
        update(TrainingJob).where(*condition).values(updated_at=utcnow(), **fields)
    )
    return result.rowcount == 1


def store_now(session: Session) -> datetime:
    """The store's clock (UTC), by which heartbeats are written and judged.

    Hosts' clocks drift: judged by one clock, a worker whose clock is behind does not look dead
    to the others, nor one whose clock is ahead outlive its staleness limit. SQLite is a file
    on this host, so its clock is this host's.
    """
    if session.get_bind().dialect.name == "postgresql":
        # statement_timestamp, not now(): now() is when the (possibly long) transaction began.
        return session.scalar(text("SELECT statement_timestamp()")).astimezone(UTC)
    return utcnow()


def touch_job(session: Session, *, id: str, worker: str) -> bool:
    """Heartbeat: only while ``worker`` still owns the job."""
    result = session.execute(
        update(TrainingJob)
        .where(TrainingJob.id == id, TrainingJob.worker == worker)
        .values(heartbeat_at=store_now(session))
    )
    return result.rowcount == 1


def job_status(session: Session, *, id: str) -> str | None:
    return session.scalar(select(TrainingJob.status).where(TrainingJob.id == id))


def job_status_and_worker(session: Session, *, id: str) -> tuple[str, str | None] | None:
    """A running job's stop check: its status and who owns it (None: no such job)."""
    row = session.execute(
        select(TrainingJob.status, TrainingJob.worker).where(TrainingJob.id == id)
    ).first()
    return None if row is None else (row[0], row[1])


# --- job events ------------------------------------------------------------------------------


def append_event(
    session: Session,
    *,
    job_id: str,
    message: str = "",
    type: str = "message",
    level: str = "info",
    data: dict[str, Any] | None = None,
    created_at: datetime | None = None,
) -> JobEvent:
    """Append one event with the job's next ``seq``; retries if another writer took it."""
    for _ in range(10):
        seq = (
            session.scalar(select(func.max(JobEvent.seq)).where(JobEvent.job_id == job_id)) or 0
        ) + 1
        event = JobEvent(
            job_id=job_id,
            seq=seq,
            message=message,
            type=type,
            level=level,
            data=data or {},
            created_at=created_at or utcnow(),
        )
        try:
            with session.begin_nested():
                session.add(event)
            return event
        except IntegrityError:
            logger.debug("event seq %s of job %s taken; retrying", seq, job_id)
    raise Conflict(f"could not append an event to job {job_id}")


def list_events(
    session: Session, *, job_id: str, after: int = 0, limit: int = 1000
) -> list[JobEvent]:
    return list(
        session.scalars(
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.seq > after)
            .order_by(JobEvent.seq)
            .limit(limit)
        ).all()
    )


# --- adapters --------------------------------------------------------------------------------


def create_adapter(
    session: Session,
    *,
    name: str,
    base_model: str,
    path: str,
    job_id: str | None = None,
    rank: int,
    metrics: dict[str, Any] | None = None,
) -> Adapter:
    """Register an adapter. Raises ``Conflict`` when the name is taken."""
    if get_adapter(session, name=name) is not None:
        raise Conflict(f"an adapter named {name!r} already exists")
    adapter = Adapter(
        name=name,
        base_model=base_model,
        path=path,
        job_id=job_id,
        rank=rank,
        metrics=metrics or {},
        is_active=False,
    )
    session.add(adapter)
    session.flush()
    return adapter


def get_adapter(session: Session, *, name: str) -> Adapter | None:
    return session.scalars(select(Adapter).where(Adapter.name == name)).one_or_none()


def list_adapters(session: Session) -> list[Adapter]:
    """Newest first."""
    return list(
        session.scalars(select(Adapter).order_by(Adapter.created_at.desc(), Adapter.id)).all()
    )


def get_active_adapter(session: Session) -> Adapter | None:
    return session.scalars(select(Adapter).where(Adapter.is_active.is_(True))).one_or_none()


# pg_advisory_xact_lock key that serializes activations (any constant unique to this use).
_ACTIVATION_LOCK = 0x7474_6163  # "ttac"


def _serialize_activations(session: Session) -> None:
    """Concurrent activations wait for each other (PostgreSQL; SQLite has one writer anyway).

    Without it, two activations under READ COMMITTED each deactivate the others (neither sees
    the other's uncommitted choice) and the second to commit breaks the one-active index:
    IntegrityError, a 500. With it, the later one sees the earlier one's adapter and
    deactivates it: the last activation wins.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ACTIVATION_LOCK})


def activate_adapter(session: Session, *, name: str) -> Adapter:
    """Make ``name`` the one active adapter. Raises ``NotFound``."""
    _serialize_activations(session)
    adapter = get_adapter(session, name=name)
    if adapter is None:
        raise NotFound(f"no adapter named {name!r}")
    # Deactivate first and flush, so the one-active unique index never sees two.
    session.execute(
        update(Adapter)
        .where(Adapter.is_active.is_(True), Adapter.id != adapter.id)
        .values(is_active=False)
    )
    # An UPDATE, not ``adapter.is_active = True``: the ORM emits nothing when the row was read
    # as active, and on SQLite (no advisory lock) a racing activation may have cleared it since.
    session.execute(update(Adapter).where(Adapter.id == adapter.id).values(is_active=True))
    session.refresh(adapter)
    return adapter


def deactivate_adapters(session: Session) -> None:
    _serialize_activations(session)
    session.execute(update(Adapter).where(Adapter.is_active.is_(True)).values(is_active=False))


def delete_adapter(session: Session, *, name: str) -> bool:
    """Unregister an adapter unless it is the active one; True when this call deleted it.

    Conditional on ``is_active`` in the DELETE itself, so an activation racing the deletion
    either lands first (nothing is deleted) or finds no adapter. Evaluations name adapters by
    name, not by key: their rows stay, as the history of what was measured.
    """
    result = session.execute(
        delete(Adapter).where(Adapter.name == name, Adapter.is_active.is_(False))
    )
    return result.rowcount == 1


def adapter_for_job(session: Session, *, job_id: str) -> Adapter | None:
    """The registered adapter a job trained (by ``job_id``), if it is still registered."""
    return session.scalars(select(Adapter).where(Adapter.job_id == job_id)).first()
