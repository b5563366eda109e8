"""Training jobs: submit, cancel, run (idempotently) and recover after a worker dies.

States: ``queued -> running -> succeeded | failed | cancelled``, plus ``cancelling`` while a
cancel of a running job is in flight. Every status change is a compare-and-set UPDATE
(``crud.transition_job``), so the API and a worker racing on one job cannot both win.

Delivery is at least once (Celery ``acks_late``), so ``run_job`` is idempotent: a terminal job is
left alone, a job running under a live process is a duplicate delivery and is skipped, and a
job whose process is gone (killed, OOM, machine lost) is taken over with ``attempts`` counted
and resumed from its last checkpoint in ``JOBS_DIR/<job id>/``; past ``MAX_JOB_ATTEMPTS`` it
ends ``failed`` with the reason. Liveness is the ``worker`` column (``host:pid``, checked
directly on the same host) and a heartbeat every ``JOB_HEARTBEAT_S`` (for other hosts).
``recover_orphaned_jobs`` (each worker at start-up and every ``JOB_SWEEP_INTERVAL_S``) re-enqueues
jobs whose process is gone, since a broker only redelivers an unacknowledged message after its
visibility timeout, which must exceed the longest job.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ttalkkac.errors import Conflict, JobCancelled, NotFound
from ttalkkac.settings import Settings
from ttalkkac.store import crud
from ttalkkac.store.db import Database
from ttalkkac.store.models import JobStatus, TrainingJob, utcnow
from ttalkkac.training.reporter import Reporter
from ttalkkac.training.spec import TrainSpec

logger = logging.getLogger(__name__)

ACTIVE = (JobStatus.running, JobStatus.cancelling)
_REQUEUED = "requeued"


def process_id() -> str:
    """This process as recorded on the job it runs: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def job_dir(settings: Settings, job_id: str) -> Path:
    return settings.jobs_dir / job_id


# --- submit and cancel (the API side) --------------------------------------------------------


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


# --- liveness --------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped by its parent still answers kill(0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def owner_alive(job: TrainingJob, settings: Settings, *, now: datetime | None = None) -> bool:
    """Whether the process recorded on a running job is still there."""
    now = now or utcnow()
    fresh = job.heartbeat_at is not None and now - job.heartbeat_at < timedelta(
        seconds=settings.job_stale_after_s
    )
    if not fresh or not job.worker:
        return False
    host, _, pid = job.worker.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        return _pid_alive(int(pid))
    return True  # another host (or a pending recovery): trust the heartbeat


# --- running a job (the worker side) ---------------------------------------------------------


class JobReporter(Reporter):
    """Writes a run's events, progress and metrics to the store; reads cancel requests."""

    def __init__(self, db: Database, job_id: str, *, progress_every_s: float = 1.0) -> None:
        self.db = db
        self.job_id = job_id
        self.progress_every_s = progress_every_s
        self._last_progress = 0.0
        self._metrics: dict[str, Any] = {}

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


class _Heartbeat:
    """Records every few seconds that this process still runs the job (for crash recovery)."""

    def __init__(self, db: Database, job_id: str, me: str, every_s: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(db, job_id, me, every_s),
            name=f"heartbeat-{job_id}",
            daemon=True,
        )

    def _run(self, db: Database, job_id: str, me: str, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                with db.session() as session:
                    crud.touch_job(session, id=job_id, worker=me)
            except Exception:  # a missed beat is not worth killing the job for
                logger.warning("[job %s] heartbeat failed", job_id, exc_info=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _claim(db: Database, settings: Settings, job_id: str, me: str) -> TrainingJob | str:
    """Take the job for this process, or say why not (a string outcome)."""
    with db.session() as session:
        job = crud.get_job(session, id=job_id, for_update=True)
        if job is None:
            logger.warning("[job %s] not in the store; dropping the message", job_id)
            return "missing"
        status = JobStatus(job.status)
        if status.terminal:
            logger.info("[job %s] already %s; nothing to do", job_id, status.value)
            return f"already {status.value}"
        previous = job.worker  # read now: the CAS below updates ``job`` in the session too
        requeued = (previous or "").startswith(f"{_REQUEUED}:")
        if status is JobStatus.cancelling and (requeued or not owner_alive(job, settings)):
            _finish_cancelled(session, job_id, "cancelled (its worker was gone)")
            return "cancelled"
        if status in ACTIVE and not requeued and owner_alive(job, settings):
            logger.info("[job %s] running in %s; duplicate delivery skipped", job_id, job.worker)
            return "duplicate"

        now = utcnow()
        if status is JobStatus.queued:
            moved = crud.transition_job(
                session,
                id=job_id,
                from_statuses=[JobStatus.queued],
                to_status=JobStatus.running,
                attempts=job.attempts + 1,
                worker=me,
                heartbeat_at=now,
                started_at=now,
                output_dir=str(job_dir(settings, job_id)),
            )
            message = "job started"
        else:  # running, but its process is gone: a redelivery after a crash
            give_up = _give_up(job, previous, settings)
            if give_up is not None:
                _fail(session, job_id, *give_up)
                return "failed"
            # Conditional on the old owner: two deliveries racing cannot both take the job over.
            moved = crud.transition_job(
                session,
                id=job_id,
                from_statuses=[JobStatus.running],
                to_status=JobStatus.running,
                where=[TrainingJob.worker == previous],
                attempts=job.attempts + 1,
                worker=me,
                heartbeat_at=now,
            )
            message = (
                "restarting the job re-enqueued after its worker was lost"
                if requeued
                else f"worker {previous} was lost; restarting the job"
            )
        if not moved:
            return "lost race"
        session.refresh(job)
        if job.worker != me:
            return "lost race"
        crud.append_event(
            session,
            job_id=job_id,
            message=f"{message} (attempt {job.attempts} of {settings.max_job_attempts}) in {me}",
            data={"attempt": job.attempts, "worker": me},
        )
        return job


def _give_up(job: TrainingJob, lost: str | None, settings: Settings) -> tuple[str, str] | None:
    """Why an orphaned job must not run again: attempts used up, or out of time."""
    if job.attempts >= settings.max_job_attempts:
        return (
            "WorkerLost",
            f"the worker running attempt {job.attempts} of {settings.max_job_attempts} "
            f"({lost}) was lost; giving up (MAX_JOB_ATTEMPTS)",
        )
    limit = timedelta(seconds=settings.job_time_limit_s)
    if job.started_at is not None and utcnow() - job.started_at > limit:
        # The hard time limit kills the process without a word: this is where it is said.
        return (
            "TimeLimitExceeded",
            f"the job started {job.started_at.isoformat()} and ran past JOB_TIME_LIMIT_S "
            f"({settings.job_time_limit_s} s); its worker ({lost}) is gone",
        )
    return None


def _fail(session: Any, job_id: str, error_type: str, message: str) -> bool:
    moved = crud.transition_job(
        session,
        id=job_id,
        from_statuses=[JobStatus.queued, *ACTIVE],
        to_status=JobStatus.failed,
        error_type=error_type[:100],
        error_message=message,
        finished_at=utcnow(),
    )
    if moved:
        crud.append_event(
            session,
            job_id=job_id,
            level="error",
            message=f"failed: {error_type}: {message}",
            data={"error_type": error_type, "error_message": message},
        )
    return moved


def _finish_cancelled(session: Any, job_id: str, message: str) -> bool:
    moved = crud.transition_job(
        session,
        id=job_id,
        from_statuses=[JobStatus.queued, *ACTIVE],
        to_status=JobStatus.cancelled,
        finished_at=utcnow(),
    )
    if moved:
        crud.append_event(session, job_id=job_id, message=message)
    return moved


def adapter_name_for(job: TrainingJob, base_model: str) -> str:
    base = Path(base_model.rstrip("/")).name or "model"
    raw = f"{base}-{job.suffix or 'ttalkkac'}-{job.id.removeprefix('job_')[:8]}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", raw)[:200]


def _register(
    session: Any, job: TrainingJob, base_model: str, out_dir: Path, results: dict[str, Any]
) -> str:
    name = adapter_name_for(job, base_model)
    metrics = {
        key: results.get(key)
        for key in (
            "train_loss",
            "eval_loss",
            "best_eval_loss",
            "best_step",
            "global_step",
            "train_runtime",
            "train_tokens_per_second",
        )
    }
    check = results.get("generation_check") or {}
    metrics["generation_parse_rate"] = check.get("parse_rate")
    metrics["generation_schema_valid_rate"] = check.get("schema_valid_rate")
    existing = crud.get_adapter(session, name=name)
    if existing is None:
        crud.create_adapter(
            session,
            name=name,
            base_model=base_model,
            path=str(out_dir),
            job_id=job.id,
            rank=int(results["hyperparameters"]["lora"]["r"]),
            metrics=metrics,
        )
    elif existing.job_id != job.id:
        raise Conflict(f"adapter name {name!r} is taken by another job")
    return name


def _resolve_base_model(job: TrainingJob, settings: Settings) -> str:
    if job.base_model:
        return job.base_model
    from ttalkkac.inference.factory import resolve_base_model

    return resolve_base_model(settings)


def run_job(db: Database, settings: Settings, job_id: str) -> str:
    """Run one delivery of a job to its end; returns the outcome. Never raises for job errors."""
    me = process_id()
    claimed = _claim(db, settings, job_id, me)
    if isinstance(claimed, str):
        return claimed
    job = claimed
    reporter = JobReporter(db, job_id)
    out_dir = job_dir(settings, job_id)
    with _Heartbeat(db, job_id, me, settings.job_heartbeat_s):
        return _execute(db, settings, job, reporter, out_dir)


def _execute(
    db: Database, settings: Settings, job: TrainingJob, reporter: JobReporter, out_dir: Path
) -> str:
    from ttalkkac.datasets import load_training_data
    from ttalkkac.training.trainer import train_lora

    job_id = job.id
    try:
        spec = TrainSpec.model_validate(job.hyperparameters)
        base_model = _resolve_base_model(job, settings)
        with db.session() as session:
            crud.update_job(session, id=job_id, base_model=base_model)
            dataset = crud.get_dataset(session, id=job.dataset_id)
            if dataset is None:
                raise NotFound(f"dataset {job.dataset_id} no longer exists")
        data = load_training_data(dataset, spec)
        reporter.event(
            f"data: {len(data.train)} train / {len(data.val)} validation records",
            data={"loader": data.stats},
        )
        if reporter.should_cancel():
            raise JobCancelled("cancelled before training")
        results = train_lora(
            base_model=base_model,
            data=data,
            spec=spec,
            out_dir=out_dir,
            reporter=reporter,
            resume=True,
        )
    except JobCancelled as exc:
        with db.session() as session:
            _finish_cancelled(session, job_id, f"cancelled: {exc.message}")
        return "cancelled"
    except Exception as exc:
        logger.exception("[job %s] failed", job_id)
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        message = getattr(exc, "message", None) or detail
        with db.session() as session:
            _fail(session, job_id, type(exc).__name__, str(message)[:4000])
        return "failed"

    with db.session() as session:
        fresh = crud.get_job(session, id=job_id, for_update=True)
        if fresh is not None and fresh.status == JobStatus.cancelling:
            _finish_cancelled(session, job_id, "cancelled as training finished; not registered")
            return "cancelled"
        name = _register(session, job, base_model, out_dir, results)
        moved = crud.transition_job(
            session,
            id=job_id,
            from_statuses=[JobStatus.running],
            to_status=JobStatus.succeeded,
            finished_at=utcnow(),
            adapter_name=name,
            metrics={**reporter._metrics, **_summary(results)},
        )
        if not moved:
            raise Conflict(f"job {job_id} changed state while finishing")
        crud.append_event(
            session,
            job_id=job_id,
            message=f"succeeded: adapter {name} registered",
            data={"adapter": name, "path": str(out_dir), **_summary(results)},
        )
    return "succeeded"


def _summary(results: dict[str, Any]) -> dict[str, Any]:
    check = results.get("generation_check") or {}
    return {
        "train_loss": results.get("train_loss"),
        "eval_loss": results.get("eval_loss"),
        "best_eval_loss": results.get("best_eval_loss"),
        "train_runtime": results.get("train_runtime"),
        "train_tokens_per_second": results.get("train_tokens_per_second"),
        "generation_parse_rate": check.get("parse_rate"),
        "generation_schema_valid_rate": check.get("schema_valid_rate"),
    }


# --- recovery --------------------------------------------------------------------------------


def recover_orphaned_jobs(
    db: Database, settings: Settings, *, enqueue: Callable[[str], None]
) -> list[str]:
    """Re-enqueue (or end) jobs left ``running``/``cancelling`` by a process that is gone."""
    recovered: list[str] = []
    with db.session() as session:
        jobs, _ = crud.list_jobs(session, limit=1000, statuses=ACTIVE)
        candidates = [j.id for j in jobs if not owner_alive(j, settings)]
    for job_id in candidates:
        with db.session() as session:
            job = crud.get_job(session, id=job_id, for_update=True)
            if job is None or JobStatus(job.status) not in ACTIVE or owner_alive(job, settings):
                continue
            if job.status == JobStatus.cancelling:
                _finish_cancelled(session, job_id, "cancelled (its worker was gone)")
                recovered.append(job_id)
                continue
            give_up = _give_up(job, job.worker, settings)
            if give_up is not None:
                _fail(session, job_id, *give_up)
                recovered.append(job_id)
                continue
            lost = job.worker
            # Marked fresh so that the next sweep waits for this message instead of piling more.
            crud.update_job(
                session, id=job_id, worker=f"{_REQUEUED}:{process_id()}", heartbeat_at=utcnow()
            )
            crud.append_event(
                session,
                job_id=job_id,
                level="warning",
                message=f"worker {lost} is gone; job re-enqueued",
                data={"lost_worker": lost, "attempts": job.attempts},
            )
        enqueue(job_id)
        recovered.append(job_id)
        logger.warning("[job %s] orphaned by %s; re-enqueued", job_id, lost)
    return recovered
