"""Evaluations from the API and the training side: submit, cancel, the activation gate.

An evaluation is a row in the store; the API's ``EvaluationRunner`` runs it. Everything here is
a short transaction: callers own the session.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from ttalkkac.adapters import BASE
from ttalkkac.errors import Conflict, NotFound
from ttalkkac.evaluation.examples import EvalSplit, Selection
from ttalkkac.settings import Settings
from ttalkkac.store import crud
from ttalkkac.store import evaluations as store
from ttalkkac.store.models import Evaluation, JobStatus, TrainingJob, utcnow

logger = logging.getLogger(__name__)

HEADLINE = "field_chrf"  # the figure require_better compares (mean field chrF, 0-100)


def create_evaluation(
    session: Session,
    *,
    adapter: str,
    dataset_id: str,
    split: EvalSplit,
    max_samples: int,
    max_meeting_chars: int,
    seed: int,
    selection: Selection | None = None,
    training_job_id: str | None = None,
) -> Evaluation:
    """Record a queued evaluation. ``NotFound`` for an unknown dataset or adapter."""
    if crud.get_dataset(session, id=dataset_id) is None:
        raise NotFound(f"no dataset with id {dataset_id!r}")
    if adapter != BASE and crud.get_adapter(session, name=adapter) is None:
        raise NotFound(f"no adapter named {adapter!r} (use {BASE!r} for the base model)")
    return store.create_evaluation(
        session,
        adapter=adapter,
        dataset_id=dataset_id,
        split=split.value,
        max_samples=max_samples,
        max_meeting_chars=max_meeting_chars,
        seed=seed,
        selection=(selection or Selection()).model_dump(),
        training_job_id=training_job_id,
    )


def cancel_evaluation(session: Session, *, id: str) -> Evaluation:
    """Cancel a queued evaluation now; ask a running one to stop. 409 when it has ended."""
    evaluation = store.get_evaluation(session, id=id)
    if evaluation is None:
        raise NotFound(f"no evaluation with id {id!r}")
    status = JobStatus(evaluation.status)
    if status.terminal:
        raise Conflict(f"evaluation {id} is already {status.value}", detail={"status": status})
    cancelled_now = status is JobStatus.queued and store.transition_evaluation(
        session,
        id=id,
        from_statuses=[JobStatus.queued],
        to_status=JobStatus.cancelled,
        finished_at=utcnow(),
    )
    if not cancelled_now:  # running, or claimed since it was read: ask the runner to stop
        store.transition_evaluation(
            session, id=id, from_statuses=[JobStatus.running], to_status=JobStatus.cancelling
        )
    session.refresh(evaluation)
    return evaluation


def evaluate_after_training(
    session: Session, settings: Settings, job: TrainingJob, adapter_name: str
) -> list[Evaluation]:
    """Queue the evaluations of a succeeded job: its adapter, and the base model on the same
    data unless an equal evaluation of the base exists already (queued, running or done).

    Called inside the transaction that marks the job succeeded, so it happens exactly once.
    """
    if not settings.eval_after_training:
        return []
    from ttalkkac.training.spec import TrainSpec

    spec = TrainSpec.from_stored(job.hyperparameters)
    if spec.val_fraction == 0:
        logger.info("[job %s] val_fraction 0: no validation split to evaluate on", job.id)
        return []
    params: dict[str, Any] = {
        "dataset_id": job.dataset_id,
        "split": EvalSplit.validation,
        "max_samples": settings.eval_after_training_samples,
        "max_meeting_chars": settings.eval_max_meeting_chars,
        "seed": 0,
        "selection": Selection.from_spec(spec),
    }
    created = [create_evaluation(session, adapter=adapter_name, training_job_id=job.id, **params)]
    if not _base_evaluated(session, created[0]):
        created.append(create_evaluation(session, adapter=BASE, training_job_id=job.id, **params))
    return created


def _base_evaluated(session: Session, like: Evaluation) -> bool:
    rows, _ = store.list_evaluations(
        session,
        adapter=BASE,
        statuses=[JobStatus.queued, JobStatus.running, JobStatus.succeeded],
        limit=50,
    )
    return any(
        row.dataset_id == like.dataset_id
        and row.split == like.split
        and row.max_samples == like.max_samples
        and row.max_meeting_chars == like.max_meeting_chars
        and row.seed == like.seed
        and row.selection == like.selection
        for row in rows
    )


def check_better_than_active(session: Session, *, name: str) -> None:
    """The activation gate: ``Conflict`` unless ``name`` scores at least the active adapter (or
    the base model when none is active) on the same data, both scores in the message."""
    candidate = store.latest_succeeded(session, adapter=name)
    if candidate is None:
        raise Conflict(
            f"require_better: adapter {name!r} has no finished evaluation; run one first "
            f'(POST /evaluations {{"adapter": "{name}", "dataset_id": ...}})'
        )
    active = crud.get_active_adapter(session)
    reference = active.name if active is not None else BASE
    if reference == name:
        return
    against = store.latest_succeeded(session, adapter=reference, same_as=candidate)
    label = f"the active adapter {reference!r}" if active is not None else "the base model"
    if against is None:
        raise Conflict(
            f"require_better: {label} has no finished evaluation on the same data as "
            f"{name!r}'s ({candidate.id}: dataset {candidate.dataset_id}, split "
            f"{candidate.split}, {candidate.max_samples} samples, seed {candidate.seed}); "
            f'evaluate it with the same parameters (adapter "{reference}") first'
        )
    mine, theirs = candidate.summary.get(HEADLINE, 0.0), against.summary.get(HEADLINE, 0.0)
    if mine < theirs:
        raise Conflict(
            f"require_better: adapter {name!r} scores {mine:.2f} mean field chrF, below "
            f"{label} at {theirs:.2f}, on the same data (evaluations {candidate.id} and "
            f"{against.id})",
            detail={
                "adapter": {"name": name, HEADLINE: mine, "evaluation_id": candidate.id},
                "active": {"name": reference, HEADLINE: theirs, "evaluation_id": against.id},
            },
        )


def scores_of(evaluation: Evaluation) -> dict[str, Any]:
    """What an adapter record carries of its latest evaluation."""
    summary = evaluation.summary or {}
    floor = summary.get("generic_floor") or {}
    return {
        "evaluation_id": evaluation.id,
        "dataset_id": evaluation.dataset_id,
        "split": evaluation.split,
        "n": summary.get("n"),
        "field_chrf": summary.get("field_chrf"),
        "valid_rate": summary.get("valid_rate"),
        "grounding": summary.get("grounding"),
        "generic_floor_field_chrf": floor.get("field_chrf"),
        "finished_at": evaluation.finished_at.isoformat() if evaluation.finished_at else None,
    }
