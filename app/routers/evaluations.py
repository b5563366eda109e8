"""``/evaluations``: score an adapter or the base model against a dataset's gold plans.

Runs in the API's ``EvaluationRunner`` (``ttalkkac.evaluation.runner``) through the serving
engine, the same path as ``/generate``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from app.deps import AuthDep, OffsetQuery, SessionDep, SettingsDep
from app.heavy import run_heavy
from app.schemas import EvaluationCreate, EvaluationPublic, EvaluationsPublic
from ttalkkac import webhooks
from ttalkkac.errors import NotFound
from ttalkkac.evaluation import commands
from ttalkkac.evaluation.report import report_markdown, scores_plot_png
from ttalkkac.evaluation.run import summarize
from ttalkkac.store import evaluations as store
from ttalkkac.store.hooks import Subject
from ttalkkac.store.models import Evaluation, JobStatus

router = APIRouter(prefix="/evaluations", tags=["evaluations"], dependencies=[AuthDep])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown evaluation."}}


def _get(session: Any, evaluation_id: str) -> Evaluation:
    evaluation = store.get_evaluation(session, id=evaluation_id)
    if evaluation is None:
        raise NotFound(f"no evaluation with id {evaluation_id!r}")
    return evaluation


def _public(session: Any, evaluation: Evaluation, *, with_rows: bool) -> EvaluationPublic:
    rows, attempts = None, None
    if with_rows:
        rows = store.list_rows(session, evaluation_id=evaluation.id)
        attempts = webhooks.attempts(session, Subject.evaluation, evaluation.id)
    public = EvaluationPublic.from_row(evaluation, rows, attempts)
    if not JobStatus(evaluation.status).terminal and rows:
        # Running: the figures of the rows finished so far.
        public.summary = summarize([r.result for r in rows])  # type: ignore[assignment]
    return public


def _wake_runner(request: Request) -> None:
    runner = getattr(request.app.state, "evaluation_runner", None)
    if runner is not None:
        runner.wake()


@router.post(
    "",
    status_code=202,
    response_model=EvaluationPublic,
    responses={
        404: {"description": "Unknown dataset or adapter."},
        409: {"description": "A webhook_url, and WEBHOOK_SECRET is not set."},
        422: {"description": "A webhook_url to a non-public address."},
    },
    summary="Queue an evaluation",
    description="Generates a plan for each selected example through the serving engine "
    "(constrained decoding, validation, chunking; greedy) and scores it against the gold plan "
    "and the meeting. Poll `GET /evaluations/{id}`; rows are kept as they finish, and an "
    "evaluation interrupted by a restart resumes where it stopped. With `webhook_url`, a "
    "signed POST tells it when the evaluation ends (see the README); `GET /evaluations/{id}` "
    "shows each delivery attempt.",
)
def create_evaluation(
    body: EvaluationCreate, request: Request, session: SessionDep, settings: SettingsDep
) -> EvaluationPublic:
    if body.webhook_url:
        webhooks.check_client_url(settings, body.webhook_url)
    evaluation = commands.create_evaluation(
        session,
        adapter=body.adapter,
        dataset_id=body.dataset_id,
        split=body.split,
        max_samples=body.max_samples,
        max_meeting_chars=body.max_meeting_chars or settings.eval_max_meeting_chars,
        seed=body.seed,
        selection=body.selection,
    )
    if body.webhook_url:
        webhooks.register(
            session, settings, Subject.evaluation, evaluation.id, url=body.webhook_url
        )
    session.commit()
    _wake_runner(request)
    return _public(session, evaluation, with_rows=False)


@router.get("", response_model=EvaluationsPublic, summary="List evaluations (newest first)")
def list_evaluations(
    session: SessionDep,
    offset: OffsetQuery = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    adapter: Annotated[str | None, Query(max_length=200)] = None,
    training_job_id: Annotated[str | None, Query(max_length=40)] = None,
) -> EvaluationsPublic:
    rows, count = store.list_evaluations(
        session, offset=offset, limit=limit, adapter=adapter, training_job_id=training_job_id
    )
    return EvaluationsPublic(
        data=[_public(session, row, with_rows=False) for row in rows], count=count
    )


@router.get(
    "/{evaluation_id}",
    response_model=EvaluationPublic,
    responses=_NOT_FOUND,
    summary="An evaluation with its per-example rows",
)
def get_evaluation(evaluation_id: str, session: SessionDep) -> EvaluationPublic:
    return _public(session, _get(session, evaluation_id), with_rows=True)


@router.get(
    "/{evaluation_id}/report.md",
    responses={**_NOT_FOUND, 200: {"content": {"text/markdown": {}}}},
    summary="The evaluation as a Markdown report",
)
async def get_report(evaluation_id: str, request: Request, session: SessionDep) -> Response:
    return await run_heavy(request, _report, evaluation_id, session)


def _report(evaluation_id: str, session: Any) -> Response:
    evaluation = _get(session, evaluation_id)
    public = _public(session, evaluation, with_rows=True)
    text = report_markdown(public.model_dump(mode="json"), plot_name="scores.png")
    return Response(text, media_type="text/markdown; charset=utf-8")


@router.get(
    "/{evaluation_id}/scores.png",
    responses={**_NOT_FOUND, 200: {"content": {"image/png": {}}}},
    summary="Per-field scores of the evaluation and its generic floor (PNG)",
)
async def get_plot(evaluation_id: str, request: Request, session: SessionDep) -> Response:
    return await run_heavy(request, _plot, evaluation_id, session)


def _plot(evaluation_id: str, session: Any) -> Response:
    public = _public(session, _get(session, evaluation_id), with_rows=True)
    return Response(scores_plot_png([public.model_dump(mode="json")]), media_type="image/png")


@router.post(
    "/{evaluation_id}/cancel",
    response_model=EvaluationPublic,
    responses={**_NOT_FOUND, 409: {"description": "The evaluation has ended."}},
    summary="Cancel an evaluation (finished rows are kept)",
)
def cancel_evaluation(evaluation_id: str, session: SessionDep) -> EvaluationPublic:
    evaluation = commands.cancel_evaluation(session, id=evaluation_id)
    return _public(session, evaluation, with_rows=False)
