"""Running one delivery of a job to its end: claim, train, register the adapter, finish.

The training stack (``ttalkkac.datasets``, ``ttalkkac.training.trainer``, the serving factory)
is imported only inside the run, so importing the job service does not pull in torch.
"""

from __future__ import annotations

import logging
import re
import secrets
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.exc import OperationalError

from ttalkkac.errors import Conflict, JobCancelled, JobInterrupted, NotFound
from ttalkkac.evaluation.commands import evaluate_after_training
from ttalkkac.jobs.claim import RunOutcome, claim_job, fail, finish_cancelled, job_dir
from ttalkkac.jobs.liveness import Heartbeat, process_id, requeued_by
from ttalkkac.jobs.reporting import JobReporter
from ttalkkac.jobs.retry import with_store_retries
from ttalkkac.jobs.shutdown import clear_stop_request, stop_request_path
from ttalkkac.settings import Settings
from ttalkkac.store import crud
from ttalkkac.store.db import Database
from ttalkkac.store.models import JobStatus, TrainingJob, utcnow
from ttalkkac.training.spec import TrainSpec
from ttalkkac.training.tracking import Tracking

logger = logging.getLogger(__name__)


def run_job(db: Database, settings: Settings, job_id: str) -> RunOutcome:
    """Run one delivery of a job to its end; returns the outcome. Never raises for job errors."""
    me = process_id()
    claimed = claim_job(db, settings, job_id, me)
    if isinstance(claimed, RunOutcome):
        return claimed
    job = claimed
    clear_stop_request(settings, job_id)  # a request left by an earlier attempt is not for us
    reporter = JobReporter(db, job_id, worker=me, stop_request=stop_request_path(settings, job_id))
    out_dir = job_dir(settings, job_id)
    with Heartbeat(db, job_id, me, settings.job_heartbeat_s, on_lost=reporter.mark_lost):
        return _execute(db, settings, job, reporter, out_dir)


def _execute(
    db: Database, settings: Settings, job: TrainingJob, reporter: JobReporter, out_dir: Path
) -> RunOutcome:
    """Train and finish; every way out ends the job, unless another process owns it now."""
    from ttalkkac.datasets import load_training_data
    from ttalkkac.training.trainer import train_lora

    job_id, me = job.id, reporter.worker
    try:
        spec = TrainSpec.from_stored(job.hyperparameters)
        base_model = _resolve_base_model(job, settings)
        with db.session() as session:
            crud.update_job(session, id=job_id, owner=me, base_model=base_model)
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
            tracking=Tracking.from_settings(settings, run_name=job_id),
            # Its own checkpoint folder: a delivery that lost the job (paused past the stale
            # limit, then continued) can neither overwrite nor rotate away this one's.
            run_id=f"{job.attempts}-{secrets.token_hex(4)}",
        )
        return _finish(db, settings, job, reporter, out_dir, base_model, results)
    except JobCancelled as exc:
        if reporter.lost:
            return RunOutcome.superseded
        why = f"cancelled: {exc.message}"
        _end(db, lambda s: finish_cancelled(s, job_id, why, owner=me))
        return RunOutcome.cancelled
    except (JobInterrupted, OperationalError) as exc:
        # A graceful stop, or the store gone for longer than the retries above waited: the job
        # goes back to the queue without using an attempt and resumes from its checkpoint.
        if reporter.lost:
            return RunOutcome.superseded
        why = (
            f"is shutting down: {exc.message}"
            if isinstance(exc, JobInterrupted)
            else f"lost the store ({exc.orig})"
        )
        return with_store_retries(
            f"job {job_id}: handing back", lambda: _hand_back(db, settings, job_id, me, why)
        )
    except Superseded:
        return RunOutcome.superseded
    except Exception as exc:
        if reporter.lost:
            logger.warning("[job %s] superseded run ended with %r", job_id, exc)
            return RunOutcome.superseded
        logger.exception("[job %s] failed", job_id)
        error_type = type(exc).__name__
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        message = str(getattr(exc, "message", None) or detail)[:4000]
        _end(db, lambda s: fail(s, job_id, error_type, message, owner=me))
        return RunOutcome.failed


def _end(db: Database, write: Callable[[Any], object]) -> None:
    """One ending write in its own transaction, retried through store outages."""

    def once() -> None:
        with db.session() as session:
            write(session)

    with_store_retries("ending a job", once)


def _hand_back(db: Database, settings: Settings, job_id: str, me: str, why: str) -> RunOutcome:
    """Give the job back to the queue after a graceful stop or a store outage; the attempt is
    not counted. ``why``: what the worker did, as the event says it ("is shutting down: ...").

    The job keeps ``running`` under the re-enqueue marker (as the sweep leaves it), so the next
    delivery takes it over and resumes from the checkpoint; the caller sends that delivery.
    """
    clear_stop_request(settings, job_id)
    with db.session() as session:
        job = crud.get_job(session, id=job_id, for_update=True)
        if job is None or job.worker != me:
            return RunOutcome.superseded
        if job.status == JobStatus.cancelling:
            finish_cancelled(session, job_id, f"cancelled (the worker {why})", owner=me)
            return RunOutcome.cancelled
        moved = crud.transition_job(
            session,
            id=job_id,
            from_statuses=[JobStatus.running],
            to_status=JobStatus.running,
            where=[TrainingJob.worker == me],
            worker=requeued_by(me),
            heartbeat_at=crud.store_now(session),
            attempts=max(job.attempts - 1, 0),
        )
        if not moved:
            return RunOutcome.superseded
        crud.append_event(
            session,
            job_id=job_id,
            level="warning",
            message=f"worker {me} {why}; the job goes back to the queue",
            data={"worker": me, "attempts_used": max(job.attempts - 1, 0)},
        )
    return RunOutcome.handed_back


class Superseded(Exception):
    """Raised inside the finishing transaction to roll it back: another process owns the job."""


def _finish(
    db: Database,
    settings: Settings,
    job: TrainingJob,
    reporter: JobReporter,
    out_dir: Path,
    base_model: str,
    results: dict[str, Any],
) -> RunOutcome:
    """``_finish_once``, retried through store outages: a trained adapter is never lost to a
    dropped connection. A retry after a commit whose answer was lost finds the job ended and
    answers ``RunOutcome.already``."""
    return with_store_retries(
        f"job {job.id}: finishing",
        lambda: _finish_once(db, settings, job, reporter, out_dir, base_model, results),
    )


def _finish_once(
    db: Database,
    settings: Settings,
    job: TrainingJob,
    reporter: JobReporter,
    out_dir: Path,
    base_model: str,
    results: dict[str, Any],
) -> RunOutcome:
    """Register the adapter and mark the job succeeded, in one transaction that this process
    commits only while it owns the job and the job is still running.

    A cancel that lands between the read and the compare-and-set (SQLite ignores
    ``FOR UPDATE``) makes the compare-and-set miss: the registration is rolled back and the
    job is ended ``cancelled`` at once instead of waiting for the sweep.
    """
    job_id, me = job.id, reporter.worker
    for _ in range(3):
        with db.session() as session:
            fresh = crud.get_job(session, id=job_id, for_update=True)
            if fresh is None or fresh.worker != me:
                reporter.mark_lost("finishing found the job owned by another process")
                raise Superseded
            status = JobStatus(fresh.status)
            if status is JobStatus.cancelling:
                finish_cancelled(
                    session, job_id, "cancelled as training finished; not registered", owner=me
                )
                return RunOutcome.cancelled
            if status.terminal:
                return RunOutcome.already(status)
            name = _register(session, job, base_model, out_dir, results)
            moved = crud.transition_job(
                session,
                id=job_id,
                from_statuses=[JobStatus.running],
                to_status=JobStatus.succeeded,
                where=[TrainingJob.worker == me],
                finished_at=utcnow(),
                adapter_name=name,
                metrics={**reporter.reported_metrics, **_summary(results)},
            )
            if not moved:
                session.rollback()  # the registration goes with the missed transition
                continue
            crud.append_event(
                session,
                job_id=job_id,
                message=f"succeeded: adapter {name} registered",
                data={"adapter": name, "path": str(out_dir), **_summary(results)},
            )
            queued = evaluate_after_training(session, settings, job, name)
            if queued:
                crud.append_event(
                    session,
                    job_id=job_id,
                    message=(
                        f"evaluation queued: {', '.join(e.adapter for e in queued)} on "
                        f"{queued[0].max_samples} validation examples "
                        f"({', '.join(e.id for e in queued)})"
                    ),
                    data={"evaluations": [e.id for e in queued]},
                )
            return RunOutcome.succeeded
    raise Conflict(f"job {job_id} kept changing state while finishing")


def _resolve_base_model(job: TrainingJob, settings: Settings) -> str:
    if job.base_model:
        return job.base_model
    from ttalkkac.hardware import resolve_base_model

    return resolve_base_model(settings)


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


def _summary(results: dict[str, Any]) -> dict[str, Any]:
    return {
        "train_loss": results.get("train_loss"),
        "eval_loss": results.get("eval_loss"),
        "best_eval_loss": results.get("best_eval_loss"),
        "train_runtime": results.get("train_runtime"),
        "train_tokens_per_second": results.get("train_tokens_per_second"),
    }
