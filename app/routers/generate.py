"""``POST /generate``: a meeting in, a validated project plan out (JSON, Markdown or Notion)."""

from __future__ import annotations

import logging
import time
from typing import Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app.deps import AuthDep, DatabaseDep, SettingsDep
from app.metrics import GENERATE_LATENCY, GENERATE_REQUESTS, GENERATE_RETRIES, GENERATED_TOKENS
from app.schemas import GenerateRequest, GenerateResponse, Timings, Usage
from app.serving import GeneratorDep
from ttalkkac import errors
from ttalkkac.adapters import resolve_adapter
from ttalkkac.inference.service import PlanResult
from ttalkkac.meetings import Utterance, meeting_text
from ttalkkac.plan_history import keep_plan
from ttalkkac.render import to_markdown, to_notion_page
from ttalkkac.settings import Settings
from ttalkkac.store.db import Database

logger = logging.getLogger(__name__)


# Bodies over MAX_REQUEST_BYTES are refused before they are read, by app.guard.
router = APIRouter(prefix="/generate", tags=["generate"], dependencies=[AuthDep])

_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown adapter."},
    409: {"description": "The adapter was trained on another base model."},
    413: {"description": "Body over MAX_REQUEST_BYTES or meeting over MAX_MEETING_CHARS."},
    422: {"description": "Invalid request (empty meeting, utterance without text, wrong types)."},
    502: {"description": "The model's answer did not validate, even after one retry."},
    503: {"description": "Engine loading or too many requests waiting (see Retry-After)."},
}

_RENDERED_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The plan: JSON (default), Markdown (`?format=markdown`) or the body of "
        "Notion's `POST /v1/pages` (`?format=notion`).",
        "content": {
            "text/markdown": {
                "example": "# 회의록 자동 요약 및 노션 연동 서비스\n\n## 프로젝트 개요\n\n"
                "- **프로젝트명**: 회의록 자동 요약 및 노션 연동 서비스\n- **담당자**: 김민수\n"
            }
        },
    }
}


def _resolve(db: Database, settings: Settings, name: str | None, served: str) -> Any:
    with db.session() as session:
        return resolve_adapter(session, settings, name=name, served_base_model=served)


def _keep(
    db: Database,
    settings: Settings,
    result: PlanResult,
    meeting: str | list[Utterance],
    request_id: str | None,
) -> str | None:
    """The plan's history id; None (and a warning on the answer) when it could not be kept.

    The plan was generated and validated: a store failure here costs the history entry, not
    the answer the client waited for.
    """
    if not settings.plan_history:
        return None
    try:
        with db.session() as session:
            row = keep_plan(
                session, settings, result, meeting=meeting_text(meeting), request_id=request_id
            )
            return row.id
    except Exception:
        logger.exception("[request %s] the plan could not be kept in the history", request_id)
        result.warnings.append("the plan was not kept in the history (store error)")
        return None


def _outcome(exc: Exception) -> str:
    if isinstance(exc, errors.EngineUnavailable):
        return "unavailable"
    if isinstance(exc, errors.GenerationInvalid):
        return "invalid_output"
    if isinstance(exc, errors.TtalkkacError):
        return "rejected"
    return "error"


@router.post(
    "",
    response_model=GenerateResponse,
    responses=_ERROR_RESPONSES | _RENDERED_RESPONSES,
    summary="Generate a project plan from a meeting",
)
async def generate(
    body: GenerateRequest,
    request: Request,
    settings: SettingsDep,
    db: DatabaseDep,
    generator: GeneratorDep,
    format: Literal["json", "markdown", "notion"] = Query(
        "json",
        description="json: plan and metadata; markdown: the plan as Markdown; "
        "notion: the page body (properties + children blocks) for Notion's API.",
    ),
) -> Any:
    engine = generator.engine
    request_id = getattr(request.state, "request_id", None)
    started = time.perf_counter()
    try:
        adapter = await run_in_threadpool(_resolve, db, settings, body.adapter, engine.base_model)
        result = await generator.generate(
            body.meeting,
            adapter=adapter,
            max_tokens=body.max_tokens,
            temperature=body.temperature,
            seed=body.seed,
            request_id=request_id or "",
        )
    except Exception as exc:
        GENERATE_REQUESTS.labels(engine.name, _outcome(exc)).inc()
        raise
    GENERATE_REQUESTS.labels(result.engine, "ok").inc()
    GENERATE_LATENCY.labels(result.engine).observe(time.perf_counter() - started)
    GENERATED_TOKENS.labels("prompt").inc(result.usage["prompt_tokens"])
    GENERATED_TOKENS.labels("completion").inc(result.usage["completion_tokens"])
    if result.retries:
        GENERATE_RETRIES.inc(result.retries)
    plan_id = await run_in_threadpool(_keep, db, settings, result, body.meeting, request_id)
    headers = {
        "X-Adapter": quote(result.adapter or "base"),
        "X-Chunks": str(result.chunks),
        "X-Completion-Tokens": str(result.usage["completion_tokens"]),
    }
    if plan_id:
        headers["X-Plan-Id"] = plan_id
    if format == "markdown":
        return Response(
            to_markdown(result.plan), media_type="text/markdown; charset=utf-8", headers=headers
        )
    if format == "notion":
        return JSONResponse(to_notion_page(result.plan), headers=headers)
    return GenerateResponse(
        plan=result.plan,
        adapter=result.adapter,
        base_model=result.base_model,
        engine=result.engine,  # type: ignore[arg-type]
        usage=Usage(**result.usage),
        timings=Timings(**result.timings),
        chunks=result.chunks,
        warnings=result.warnings,
        request_id=request_id,
        plan_id=plan_id,
    )
