"""``/plans``: the history of generated plans, in JSON, Markdown or Notion form, and Notion pages.

Every plan ``POST /generate`` returns is kept (``ttalkkac.plan_history``); publishing one to
Notion is ``ttalkkac.notion``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from app.deps import AuthDep, DatabaseDep, OffsetQuery, SessionDep, SettingsDep
from app.schemas import NotionPagePublic, NotionPublish, PlanRecordPublic, PlanRecordsPublic
from ttalkkac import notion
from ttalkkac.errors import NotFound
from ttalkkac.plan import ProjectPlan
from ttalkkac.render import to_markdown, to_notion_page
from ttalkkac.store import plans as store
from ttalkkac.store.models import Plan

router = APIRouter(prefix="/plans", tags=["plans"], dependencies=[AuthDep])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown plan."}}


def _get(session: Any, plan_id: str) -> Plan:
    row = store.get_plan(session, id=plan_id)
    if row is None:
        raise NotFound(f"no plan with id {plan_id!r}")
    return row


@router.get("", response_model=PlanRecordsPublic, summary="List kept plans (newest first)")
def list_plans(
    session: SessionDep,
    offset: OffsetQuery = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    adapter: Annotated[
        str | None, Query(max_length=200, description='An adapter name, or "base".')
    ] = None,
    meeting_sha256: Annotated[
        str | None,
        Query(
            pattern=r"^[0-9a-fA-F]{64}$",
            description="Only the plans of this meeting (see meeting_sha256 of a plan).",
        ),
    ] = None,
) -> PlanRecordsPublic:
    rows, count = store.list_plans(
        session, offset=offset, limit=limit, adapter=adapter, meeting_sha256=meeting_sha256
    )
    return PlanRecordsPublic(data=[PlanRecordPublic.from_row(row) for row in rows], count=count)


@router.get(
    "/{plan_id}",
    response_model=PlanRecordPublic,
    responses={
        **_NOT_FOUND,
        200: {
            "description": "The record (JSON), the plan as Markdown (`?format=markdown`) or the "
            "body of Notion's `POST /v1/pages` (`?format=notion`).",
            "content": {"text/markdown": {}},
        },
    },
    summary="A kept plan",
)
def get_plan(
    plan_id: str,
    session: SessionDep,
    format: Literal["json", "markdown", "notion"] = Query(
        "json", description="json: the record; markdown: the plan; notion: the page body."
    ),
) -> Any:
    row = _get(session, plan_id)
    if format == "json":
        return PlanRecordPublic.from_row(row)
    plan = ProjectPlan.model_validate(row.plan)
    if format == "markdown":
        return Response(to_markdown(plan), media_type="text/markdown; charset=utf-8")
    return JSONResponse(to_notion_page(plan))


@router.delete(
    "/{plan_id}",
    status_code=204,
    responses=_NOT_FOUND,
    summary="Delete a kept plan (its Notion page, if any, stays in Notion)",
)
def delete_plan(plan_id: str, session: SessionDep) -> Response:
    if not store.delete_plan(session, id=plan_id):
        raise NotFound(f"no plan with id {plan_id!r}")
    return Response(status_code=204)


@router.post(
    "/{plan_id}/notion",
    response_model=NotionPagePublic,
    status_code=201,
    responses={
        200: {"description": "The plan already had a page: that page, unchanged."},
        **_NOT_FOUND,
        409: {
            "description": "NOTION_TOKEN is not set, or another call is creating this "
            "plan's page right now (retry to get it)."
        },
        422: {"description": "Invalid parent, or Notion refused (its message passed on)."},
        503: {"description": "Notion rate limits or fails after retries (see Retry-After)."},
    },
    summary="Create the plan's Notion page (once per plan)",
    description="Creates a page under `parent_page_id` (a sub-page) or in `database_id` / "
    "`data_source_id` (a row titled with the project name) through Notion's API, with the "
    "blocks of `?format=notion`. A plan gets one page: calling again returns it (200), "
    "finishing it first if an earlier call stopped midway.",
)
def publish_to_notion(
    plan_id: str, body: NotionPublish, db: DatabaseDep, settings: SettingsDep
) -> JSONResponse:
    publication = notion.publish_plan(db, settings, plan_id=plan_id, parent=body.to_parent())
    public = NotionPagePublic(
        plan_id=publication.plan_id,
        page_id=publication.page_id,
        url=publication.url,
        parent=publication.parent,
        blocks=publication.blocks,
        created=publication.created,
    )
    return JSONResponse(public.model_dump(mode="json"), status_code=201 if public.created else 200)
