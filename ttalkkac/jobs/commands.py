"""The API side of jobs: submit, cancel, and fail a job the broker would not take."""

from __future__ import annotations

from typing import Any

from ttalkkac.errors import Conflict, NotFound
from ttalkkac.store import crud
from ttalkkac.store.db import Database
from ttalkkac.store.models import JobStatus, TrainingJob, utcnow
from ttalkkac.training.spec import TrainSpec


def create_job(
    session: Any,
    *,
    dataset_id: str,
    spec: TrainSpec,
    base_model: str | None = None,
    suffix: str | None = None,
) -> TrainingJob:
    """Record a queued job (commit it before enqueueing). ``NotFound`` for an unknown dataset."""
    if crud.get_dataset(session, id=dataset_id) is None:
        raise NotFound(f"no dataset with id {dataset_id!r}")
    job = crud.create_job(
        session,
        dataset_id=dataset_id,
        base_model=base_model,
        hyperparameters=spec.model_dump(mode="json"),
        suffix=suffix,
    )
    crud.append_event(
        session,
        job_id=job.id,
        message="job queued",
        data={"dataset_id": dataset_id, "base_model": base_model},
    )
    return job


def mark_enqueue_failed(db: Database, job_id: str, exc: BaseException) -> None:
    """The broker refused the task: the job can never start, so it fails now, not silently."""
    with db.session() as session:
        if crud.transition_job(
            session,
            id=job_id,
            from_statuses=[JobStatus.queued],
            to_status=JobStatus.failed,
            error_type="EnqueueFailed",
            error_message=f"could not enqueue the job: {exc}",
            finished_at=utcnow(),
        ):
            crud.append_event(
                session, job_id=job_id, level="error", message=f"enqueue failed: {exc}"
            )


def cancel_job(session: Any, *, id: str) -> TrainingJob:
    """Cancel a queued job now; ask a running one to stop (``cancelling``). 409 when finished."""
    for _ in range(3):  # the worker may claim the job between our read and our write
        job = crud.get_job(session, id=id)
        if job is None:
            raise NotFound(f"no training job with id {id!r}")
        status = JobStatus(job.status)
        if status is JobStatus.cancelling:
            return job
        if status.terminal:
            raise Conflict(f"job {id} is already {status.value}", detail={"status": status.value})
        if status is JobStatus.queued and crud.transition_job(
            session,
            id=id,
            from_statuses=[JobStatus.queued],
            to_status=JobStatus.cancelled,
            finished_at=utcnow(),
        ):
            crud.append_event(session, job_id=id, message="cancelled before it started")
            break
        if status is JobStatus.running and crud.transition_job(
            session, id=id, from_statuses=[JobStatus.running], to_status=JobStatus.cancelling
        ):
            crud.append_event(
                session, job_id=id, message="cancel requested; stopping after the current step"
            )
            break
        session.expire_all()
    session.flush()
    session.expire_all()
    job = crud.get_job(session, id=id)
    assert job is not None
    return job
