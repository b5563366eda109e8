"""``/train``: submit LoRA fine-tuning jobs, watch them, cancel them, delete ended ones."""

from __future__ import annotations

import io
import logging
import threading
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from sqlalchemy.exc import IntegrityError

from app.deps import MAX_OFFSET, AuthDep, DatabaseDep, OffsetQuery, SessionDep, SettingsDep
from app.downloads import ZIP_RESPONSE, zip_response
from app.heavy import run_heavy
from app.schemas import (
    AdapterPublic,
    CheckpointAdapterCreate,
    CheckpointPublic,
    CheckpointsPublic,
    JobCreate,
    JobEventPublic,
    JobEventsPublic,
    JobPublic,
    JobsPublic,
)
from ttalkkac import checkpoints, jobs, retention, webhooks
from ttalkkac.base_models import check_base_model
from ttalkkac.datasets import check_filter
from ttalkkac.errors import EngineUnavailable, NotFound
from ttalkkac.export import tensorboard_export
from ttalkkac.settings import Settings
from ttalkkac.store import crud
from ttalkkac.store.db import Database
from ttalkkac.store.hooks import Subject
from ttalkkac.store.models import TrainingJob
from ttalkkac.training.spec import TrainSpec
from ttalkkac.training.tracking import check_tracking

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/train", tags=["training"], dependencies=[AuthDep])

_celery_lock = threading.Lock()


def _celery(request: Request) -> Any:
    """The Celery app that sends tasks, built once per API process (same broker resolution)."""
    state = request.app.state
    with _celery_lock:
        if getattr(state, "celery", None) is None:
            from worker.celery_app import create_celery_app

            state.celery = create_celery_app(state.settings)
    return state.celery


def _job_or_404(session: Any, job_id: str) -> TrainingJob:
    job = crud.get_job(session, id=job_id)
    if job is None:
        raise NotFound(f"no training job with id {job_id!r}")
    return job


@router.post("", status_code=202, response_model=JobPublic)
async def create_job(
    body: JobCreate, request: Request, settings: SettingsDep, db: DatabaseDep
) -> JobPublic:
    """Queue a job. The row is committed before the task is sent, so a worker always finds it."""
    # A heavy thread: the job's filter is checked against the whole dataset, parsed again.
    return await run_heavy(request, _create_job, body, request, settings, db)


def _create_job(body: JobCreate, request: Request, settings: Settings, db: Database) -> JobPublic:
    check_tracking(body.hyperparameters, settings)
    base_model = check_base_model(body.base_model, settings) if body.base_model else None
    base_model = base_model or settings.base_model
    with db.session() as session:
        dataset = crud.get_dataset(session, id=body.dataset_id)
    if dataset is None:
        raise NotFound(f"no dataset with id {body.dataset_id!r}")
    # Fail now, not in the worker, when the job's filter leaves nothing to train on. Outside any
    # transaction: loading a large dataset takes seconds, and SQLite has one writer at a time.
    check_filter(dataset, body.hyperparameters)
    if body.webhook_url:
        webhooks.check_client_url(settings, body.webhook_url)
    gone = NotFound(f"dataset {body.dataset_id!r} was deleted while the job was being created")
    try:
        with db.session() as session:
            # Again, in the job's own transaction: a DELETE /datasets/{id} may have won since.
            if crud.get_dataset(session, id=body.dataset_id) is None:
                raise gone
            job = jobs.create_job(
                session,
                dataset_id=body.dataset_id,
                spec=body.hyperparameters,
                base_model=base_model,
                suffix=body.suffix,
            )
            if body.webhook_url:
                webhooks.register(
                    session, settings, Subject.training_job, job.id, url=body.webhook_url
                )
    except IntegrityError as exc:  # deleted between that read and the insert (foreign key)
        raise gone from exc
    try:
        from worker.celery_app import enqueue_training_job

        enqueue_training_job(_celery(request), job.id)
    except Exception as exc:
        logger.exception("[job %s] enqueue failed", job.id)
        jobs.mark_enqueue_failed(db, job.id, exc)
        raise EngineUnavailable(
            f"the job broker is unavailable; job {job.id} was marked failed", retry_after_s=30
        ) from exc
    logger.info("[job %s] queued on %s", job.id, settings.training_queue)
    return JobPublic.from_row(job)


@router.get("", response_model=JobsPublic)
def list_jobs(
    session: SessionDep,
    offset: OffsetQuery = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JobsPublic:
    """Newest first."""
    rows, count = crud.list_jobs(session, offset=offset, limit=limit)
    return JobsPublic(data=[JobPublic.from_row(r) for r in rows], count=count)


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: str, session: SessionDep) -> JobPublic:
    return JobPublic.from_row(_job_or_404(session, job_id))


@router.get("/{job_id}/events", response_model=JobEventsPublic)
def list_events(
    job_id: str,
    session: SessionDep,
    after: Annotated[
        int, Query(ge=0, le=MAX_OFFSET, description="Only events with seq > after.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> JobEventsPublic:
    job = _job_or_404(session, job_id)
    events = crud.list_events(session, job_id=job_id, after=after, limit=limit)
    return JobEventsPublic(
        data=[JobEventPublic.model_validate(e) for e in events],
        status=job.status,
        next_after=events[-1].seq if events else after,
    )


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel_job(job_id: str, session: SessionDep) -> JobPublic:
    """A queued job is cancelled now; a running one stops after its current optimizer step."""
    return JobPublic.from_row(jobs.cancel_job(session, id=job_id))


@router.delete(
    "/{job_id}",
    status_code=204,
    response_class=Response,
    responses={
        404: {"description": "Unknown job."},
        409: {
            "description": "The job has not ended, or the adapter it trained is still "
            "registered (DELETE /adapters/{name} first)."
        },
    },
)
def delete_job(job_id: str, db: DatabaseDep, settings: SettingsDep) -> Response:
    """Delete an ended job (succeeded, failed, cancelled): its events and its folder
    (checkpoints, adapter files, results, loss plot). Its evaluations are kept."""
    retention.delete_job(db, settings, id=job_id)
    return Response(status_code=204)


@router.get(
    "/{job_id}/loss.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "Train and validation loss."}},
)
async def loss_plot(
    job_id: str, request: Request, session: SessionDep, settings: SettingsDep
) -> Response:
    """The final plot once the job has one; while it runs, drawn from its logged losses."""
    return await run_heavy(request, _loss_plot, job_id, session, settings)


def _loss_plot(job_id: str, session: Any, settings: Settings) -> Response:
    job = _job_or_404(session, job_id)
    final = jobs.job_dir(settings, job_id) / "loss.png"
    if job.status == "succeeded" and final.is_file():
        return FileResponse(final, media_type="image/png")
    from ttalkkac.training.report import plot_loss

    history = [
        e.data
        for e in crud.list_events(session, job_id=job_id, limit=100_000)
        if e.type == "metrics" and ("loss" in e.data or "eval_loss" in e.data)
    ]
    buffer = io.BytesIO()
    plot_loss(history, buffer, title=f"job {job_id} ({job.status})")
    return Response(
        buffer.getvalue(), media_type="image/png", headers={"Cache-Control": "no-store"}
    )


@router.get(
    "/{job_id}/tensorboard.zip",
    response_class=StreamingResponse,
    responses=ZIP_RESPONSE,
    summary="The job's TensorBoard event files, as a zip",
    description="Jobs submitted with `hyperparameters.report_to='tensorboard'`; also while they "
    "run. Unzip and run `tensorboard --logdir <folder>`.",
)
def tensorboard_zip(job_id: str, session: SessionDep, settings: SettingsDep) -> StreamingResponse:
    _job_or_404(session, job_id)
    return zip_response(tensorboard_export(job_id, jobs.job_dir(settings, job_id), settings))


_NO_BODY = CheckpointAdapterCreate()  # no body: the default name
StepPath = Annotated[int, Path(ge=1, le=MAX_OFFSET, description="The checkpoint's step.")]


@router.get("/{job_id}/checkpoints", response_model=CheckpointsPublic)
def list_checkpoints(job_id: str, session: SessionDep, settings: SettingsDep) -> CheckpointsPublic:
    """Complete checkpoints, oldest first: while a job runs the best and the last; after it
    succeeded, all of them if it was submitted with `hyperparameters.keep_checkpoints`."""
    job = _job_or_404(session, job_id)
    found = checkpoints.list_checkpoints(jobs.job_dir(settings, job_id))
    return CheckpointsPublic(
        data=[CheckpointPublic.from_checkpoint(c) for c in found],
        count=len(found),
        keep_checkpoints=TrainSpec.from_stored(job.hyperparameters or {}).keep_checkpoints,
    )


@router.post(
    "/{job_id}/checkpoints/{step}/adapter",
    status_code=201,
    response_model=AdapterPublic,
    responses={
        404: {"description": "Unknown job, or no complete checkpoint at that step."},
        409: {"description": "The adapter name is taken, or the job has not started."},
    },
    summary="Register a checkpoint as an adapter",
)
def register_checkpoint(
    job_id: str,
    step: StepPath,
    session: SessionDep,
    settings: SettingsDep,
    body: CheckpointAdapterCreate = _NO_BODY,
) -> AdapterPublic:
    """Its adapter files are copied under the data folder, so the adapter outlives the job's
    checkpoints; then it is served, evaluated and downloaded like any other adapter."""
    job = _job_or_404(session, job_id)
    row = checkpoints.register_checkpoint(session, settings, job=job, step=step, name=body.name)
    return AdapterPublic.of(row, settings.data_dir)
