"""Keyword-only CRUD over evaluations and their rows. Callers own the session."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ttalkkac.store import crud, hooks
from ttalkkac.store.models import Evaluation, EvaluationRow, JobStatus, utcnow


def create_evaluation(
    session: Session,
    *,
    adapter: str,
    dataset_id: str,
    split: str,
    max_samples: int,
    max_meeting_chars: int,
    seed: int,
    selection: dict[str, Any],
    training_job_id: str | None = None,
) -> Evaluation:
    evaluation = Evaluation(
        adapter=adapter,
        dataset_id=dataset_id,
        split=split,
        max_samples=max_samples,
        max_meeting_chars=max_meeting_chars,
        seed=seed,
        selection=selection,
        training_job_id=training_job_id,
        status=JobStatus.queued.value,
    )
    session.add(evaluation)
    session.flush()
    return evaluation


def get_evaluation(session: Session, *, id: str) -> Evaluation | None:
    return session.get(Evaluation, id)


def list_evaluations(
    session: Session,
    *,
    offset: int = 0,
    limit: int = 100,
    statuses: Iterable[str] | None = None,
    adapter: str | None = None,
    training_job_id: str | None = None,
) -> tuple[list[Evaluation], int]:
    """Newest first."""
    where = []
    if statuses is not None:
        where.append(Evaluation.status.in_([str(s) for s in statuses]))
    if adapter is not None:
        where.append(Evaluation.adapter == adapter)
    if training_job_id is not None:
        where.append(Evaluation.training_job_id == training_job_id)
    return crud.newest_first(session, Evaluation, where=where, offset=offset, limit=limit)


def transition_evaluation(
    session: Session,
    *,
    id: str,
    from_statuses: Iterable[str],
    to_status: str,
    where: Iterable[Any] = (),
    **fields: Any,
) -> bool:
    """Compare-and-set of the status (plus other columns); True when this call moved it.

    An evaluation that ends here is told to ``hooks`` in this transaction (its webhooks).
    """
    moved = crud.compare_and_set(
        session,
        Evaluation,
        id=id,
        from_statuses=from_statuses,
        to_status=to_status,
        where=where,
        **fields,
    )
    if moved and JobStatus(to_status).terminal:
        hooks.ended(session, hooks.Subject.evaluation, id, str(to_status))
    return moved


def update_owned(session: Session, *, id: str, owner: str, **fields: Any) -> bool:
    """Progress and heartbeat, only while ``owner`` still runs the evaluation."""
    if "status" in fields:
        raise ValueError("use transition_evaluation to change the status")
    result = session.execute(
        update(Evaluation)
        .where(Evaluation.id == id, Evaluation.owner == owner)
        .values(updated_at=utcnow(), **fields)
    )
    return result.rowcount == 1


def add_row(
    session: Session, *, evaluation_id: str, index: int, record_id: str, result: dict[str, Any]
) -> bool:
    """Store one finished example; False when that index was stored already (a resumed run)."""
    try:
        with session.begin_nested():
            session.add(
                EvaluationRow(
                    evaluation_id=evaluation_id, index=index, record_id=record_id, result=result
                )
            )
    except IntegrityError:
        return False
    return True


def list_rows(session: Session, *, evaluation_id: str) -> list[EvaluationRow]:
    return list(
        session.scalars(
            select(EvaluationRow)
            .where(EvaluationRow.evaluation_id == evaluation_id)
            .order_by(EvaluationRow.index)
        ).all()
    )


def count_rows(session: Session, *, evaluation_id: str) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(EvaluationRow)
            .where(EvaluationRow.evaluation_id == evaluation_id)
        )
        or 0
    )


def latest_succeeded(
    session: Session, *, adapter: str, same_as: Evaluation | None = None
) -> Evaluation | None:
    """The adapter's newest succeeded evaluation (on the same data as ``same_as`` if given)."""
    where = [Evaluation.adapter == adapter, Evaluation.status == JobStatus.succeeded.value]
    if same_as is not None:
        where += [
            Evaluation.dataset_id == same_as.dataset_id,
            Evaluation.split == same_as.split,
            Evaluation.max_samples == same_as.max_samples,
            Evaluation.max_meeting_chars == same_as.max_meeting_chars,
            Evaluation.seed == same_as.seed,
        ]
    rows = session.scalars(
        select(Evaluation)
        .where(*where)
        .order_by(Evaluation.finished_at.desc(), Evaluation.id.desc())
        .limit(20)
    ).all()
    if same_as is None:
        return rows[0] if rows else None
    # Same selection (split fraction and seed) too: JSON columns do not compare portably in SQL.
    return next((row for row in rows if row.selection == same_as.selection), None)


def evaluations_using(
    session: Session,
    *,
    statuses: Iterable[str],
    dataset_id: str | None = None,
    adapter: str | None = None,
) -> list[str]:
    """Ids of the evaluations in ``statuses`` of ``dataset_id`` and/or ``adapter``."""
    where = [Evaluation.status.in_([str(s) for s in statuses])]
    if dataset_id is not None:
        where.append(Evaluation.dataset_id == dataset_id)
    if adapter is not None:
        where.append(Evaluation.adapter == adapter)
    return list(session.scalars(select(Evaluation.id).where(*where)).all())
