"""``POST /generate``: a meeting in, a validated project plan out (JSON, Markdown or Notion).

``POST /generate/stream`` is the same request watched as it runs (Server-Sent Events): the
same body, checks and generation (``PlanGenerator.stream`` is ``generate`` with its progress
reported), ending in the same answer or the same error envelope.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import asdict
from typing import Any, Literal, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.types import Send

from app.deps import AuthDep, DatabaseDep, SettingsDep
from app.errors import error_body, status_for
from app.metrics import (
    GENERATE_LATENCY,
    GENERATE_REQUESTS,
    GENERATE_RETRIES,
    GENERATED_TOKENS,
    UNHANDLED_ERRORS,
)
from app.schemas import (
    GenerateProgress,
    GenerateRequest,
    GenerateResponse,
    GenerateStreamResult,
    Timings,
    Usage,
)
from app.serving import GeneratorDep
from ttalkkac import errors
from ttalkkac.adapters import resolve_adapter
from ttalkkac.inference.progress import PlanProgress
from ttalkkac.inference.service import PlanResult
from ttalkkac.meetings import Utterance, meeting_text
from ttalkkac.plan_history import keep_plan
from ttalkkac.render import to_markdown, to_notion_page
from ttalkkac.settings import Settings
from ttalkkac.store.db import Database

logger = logging.getLogger(__name__)

T = TypeVar("T")


# Bodies over MAX_REQUEST_BYTES are refused before they are read, by app.guard.
router = APIRouter(prefix="/generate", tags=["generate"], dependencies=[AuthDep])

_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown adapter."},
    409: {"description": "The adapter was trained on another base model."},
    413: {"description": "Body over MAX_REQUEST_BYTES or meeting over MAX_MEETING_CHARS."},
    422: {
        "description": "Invalid request (empty meeting, utterance without text, wrong types, "
        "more chunks than MAX_CHUNKS_PER_REQUEST)."
    },
    502: {"description": "The model's answer did not validate, even after one retry."},
    503: {
        "description": "Engine loading, or too many requests or engine requests (chunks) in "
        "flight (see Retry-After)."
    },
    504: {"description": "Not done within GENERATE_TIMEOUT_S; the engine's work was aborted."},
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


class ClientGone(Exception):
    """The client of a /generate request disconnected before its plan was done."""


async def _unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result; a client that disconnects meanwhile cancels it, which aborts the
    engine's requests (Starlette would let a plain route run on for nobody).

    The body has been read, so the next ASGI message is the disconnect; it is awaited, not
    polled: ``Request.is_disconnected`` cannot see it through the ``http`` middleware.
    """

    async def client_left() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(client_left())
    try:
        await asyncio.wait([task, watcher], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise ClientGone
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
        await asyncio.wait([task, watcher])


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, errors.EngineUnavailable):
        return "unavailable"
    if isinstance(exc, errors.GenerationInvalid):
        return "invalid_output"
    if isinstance(exc, errors.TtalkkacError):
        return "rejected"
    return "error"


def _count_success(result: PlanResult, started: float) -> None:
    GENERATE_REQUESTS.labels(result.engine, "ok").inc()
    GENERATE_LATENCY.labels(result.engine).observe(time.perf_counter() - started)
    GENERATED_TOKENS.labels("prompt").inc(result.usage["prompt_tokens"])
    GENERATED_TOKENS.labels("completion").inc(result.usage["completion_tokens"])
    if result.retries:
        GENERATE_RETRIES.inc(result.retries)


def _response(
    result: PlanResult, request_id: str | None, plan_id: str | None = None
) -> GenerateResponse:
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
        result = await _unless_client_leaves(
            request,
            generator.generate(
                body.meeting,
                adapter=adapter,
                max_tokens=body.max_tokens,
                temperature=body.temperature,
                seed=body.seed,
                request_id=request_id or "",
            ),
        )
    except ClientGone:
        GENERATE_REQUESTS.labels(engine.name, "cancelled").inc()
        return Response(status_code=499)  # nobody reads it; the access log shows what happened
    except Exception as exc:
        GENERATE_REQUESTS.labels(engine.name, _outcome(exc)).inc()
        raise
    _count_success(result, started)
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
    return _response(result, request_id, plan_id)


# --- the stream ------------------------------------------------------------------------------

_STREAM_EXAMPLE = (
    'event: progress\ndata: {"kind":"admitted","chunks":0,"chunk":0,"attempt":0,"tokens":0,'
    '"text":"","message":""}\n\n'
    'event: progress\ndata: {"kind":"planned","chunks":1,"chunk":0,"attempt":0,"tokens":0,'
    '"text":"","message":""}\n\n'
    'event: progress\ndata: {"kind":"tokens","chunks":1,"chunk":1,"attempt":1,"tokens":38,'
    '"text":"{\\"project_name\\":\\"회의록 자동 요약 및 노션","message":""}\n\n'
    'event: plan\ndata: {"plan":{"project_name":"회의록 자동 요약 및 노션 연동 서비스",...},'
    '"adapter":null,...,"markdown":"# 회의록 자동 요약 및 노션 연동 서비스\\n..."}\n\n'
)

_STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events. `event: progress` (data: GenerateProgress) while "
        "the plan is generated, then exactly one of `event: plan` (data: GenerateStreamResult, "
        "the answer of `/generate` plus its Markdown) or `event: error` (data: the error "
        "envelope plus `status`, the HTTP status `/generate` would have answered). Problems "
        "found before the first event (bad body, unknown adapter, engine not ready, too many "
        "requests) are answered with their HTTP status, as `/generate` answers them.",
        "content": {"text/event-stream": {"example": _STREAM_EXAMPLE}},
    }
}


class PlanEventStream(StreamingResponse):
    """An event stream that closes its events when the response ends, however it ends.

    Not FastAPI's ``EventSourceResponse``: as a route's response class that one makes FastAPI
    treat the route as a generator, and this route must answer some requests with a status
    code before its stream starts.

    A client that goes away cancels the response, possibly while it is sending rather than
    inside the event iterator; closing the iterator here stops the generation (and the
    engine's work) at once instead of whenever the garbage collector gets to it.
    """

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes]) -> None:
        super().__init__(events, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._events = events

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            await self._events.aclose()  # type: ignore[attr-defined]


def _sse(event: str, data: BaseModel | dict[str, Any]) -> bytes:
    # JSON escapes CR and LF inside strings, so one event is one `data:` line.
    if isinstance(data, BaseModel):
        payload = data.model_dump_json()
    else:
        payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\ndata: {payload}\n\n".encode()


def _error_event(
    status: int, code: str, message: str, detail: Any, request_id: str | None
) -> bytes:
    return _sse("error", {"status": status, **error_body(code, message, detail, request_id)})


async def _plan_events(
    events: AsyncIterator[PlanProgress | PlanResult],
    *,
    engine: str,
    request_id: str | None,
    started: float,
    keep: Callable[[PlanResult], str | None],
) -> AsyncIterator[bytes]:
    async with aclosing(events):  # type: ignore[type-var]
        try:
            async for event in events:
                if isinstance(event, PlanResult):
                    _count_success(event, started)
                    plan_id = await run_in_threadpool(keep, event)
                    response = _response(event, request_id, plan_id)
                    final = GenerateStreamResult(**dict(response), markdown=to_markdown(event.plan))
                    yield _sse("plan", final)
                else:
                    yield _sse("progress", GenerateProgress(**asdict(event)))
        except errors.TtalkkacError as exc:
            GENERATE_REQUESTS.labels(engine, _outcome(exc)).inc()
            yield _error_event(status_for(exc), exc.code, exc.message, exc.detail, request_id)
        except (asyncio.CancelledError, GeneratorExit):
            GENERATE_REQUESTS.labels(engine, "cancelled").inc()  # the client went away
            raise
        except Exception:
            logger.exception("unhandled error in a plan stream [request_id=%s]", request_id)
            UNHANDLED_ERRORS.inc()
            GENERATE_REQUESTS.labels(engine, "error").inc()
            yield _error_event(500, "internal_error", "internal server error", None, request_id)


@router.post(
    "/stream",
    status_code=200,  # for the schema: PlanEventStream's constructor has no status to read
    response_class=PlanEventStream,
    responses=_ERROR_RESPONSES | _STREAM_RESPONSES,
    summary="Generate a project plan, watching it arrive (Server-Sent Events)",
)
async def generate_stream(
    body: GenerateRequest,
    request: Request,
    settings: SettingsDep,
    db: DatabaseDep,
    generator: GeneratorDep,
) -> PlanEventStream:
    engine = generator.engine
    request_id = getattr(request.state, "request_id", None)
    started = time.perf_counter()
    try:
        adapter = await run_in_threadpool(_resolve, db, settings, body.adapter, engine.base_model)
        # Refused now, with a status code, rather than as the stream's only event.
        generator.check_admission(body.meeting)
    except Exception as exc:
        GENERATE_REQUESTS.labels(engine.name, _outcome(exc)).inc()
        raise
    events = generator.stream(
        body.meeting,
        adapter=adapter,
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        seed=body.seed,
        request_id=request_id or "",
    )
    return PlanEventStream(
        _plan_events(
            events,
            engine=engine.name,
            request_id=request_id,
            started=started,
            keep=lambda result: _keep(db, settings, result, body.meeting, request_id),
        )
    )
