"""Liveness, readiness and Prometheus metrics (no API key: probes and scrapers call these).

With API keys configured, ``/ready`` without one says only whether the service is ready (and
its state word): the model path, adapter names and engine errors are for callers with a key.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.deps import DatabaseDep, SettingsDep, request_has_api_key
from app.metrics import ENGINE_READY, MERGED_ADAPTER
from app.schemas import HealthPublic, ReadyPublic, ReadyStatus
from ttalkkac import __version__
from ttalkkac.store import crud

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthPublic, summary="The process is alive")
async def health() -> HealthPublic:  # async: no thread to wait for, however busy the pool
    return HealthPublic(version=__version__)


@router.get(
    "/ready",
    response_model=ReadyPublic,
    responses={
        200: {
            "description": "Ready. With API_KEYS set and no key given: only `ready` and "
            "`state` (the ReadyStatus schema)."
        },
        503: {"model": ReadyPublic, "description": "Not ready (loading or failed)."},
    },
    summary="The engine is loaded and has generated (warm-up)",
)
def ready(request: Request, db: DatabaseDep, settings: SettingsDep) -> JSONResponse:
    generator = getattr(request.app.state, "generator", None)
    if not request_has_api_key(request, settings):
        # Always true without API keys; with them, a probe learns only ready or not.
        brief = (
            ReadyStatus(ready=False, state="disabled")
            if generator is None
            else ReadyStatus(ready=generator.engines.ready, state=generator.engines.status())
        )
        return JSONResponse(brief.model_dump(mode="json"), status_code=_status(brief))
    mode = getattr(request.app.state, "serving_mode", "lora")
    switcher = getattr(request.app.state, "switcher", None)
    active = None
    try:
        with db.session() as session:
            row = crud.get_active_adapter(session)
            active = row.name if row else None
    except Exception:  # the store is not the engine: report, do not fail the probe on it
        logger.exception("could not read the active adapter")
    if generator is None:
        body = ReadyPublic(
            ready=False,
            state="disabled",
            engine="none",
            mode=mode,
            base_model="",
            active_adapter=active,
            waiting=0,
            max_waiting_requests=0,
        )
    else:
        engines = generator.engines
        engine = engines.engine
        body = ReadyPublic(
            ready=engines.ready,
            state=engines.status(),
            engine=engine.name,
            mode=mode,
            base_model=engine.base_model,
            active_adapter=active,
            **(switcher.status() if switcher is not None else {}),
            lora_engine=engines.lora_engine_status(),
            loaded_adapters=engines.loaded_adapters(),
            waiting=generator.waiting(),
            max_waiting_requests=generator.max_waiting_requests,
            error=engines.error,
        )
    return JSONResponse(body.model_dump(mode="json"), status_code=_status(body))


def _status(body: ReadyStatus) -> int:
    return 200 if body.ready else 503


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    switcher = getattr(request.app.state, "switcher", None)
    if switcher is not None:
        merged = switcher.merged_adapter
        MERGED_ADAPTER.clear()
        MERGED_ADAPTER.labels(merged.name if merged else "base").set(1)
        lora_engine = switcher.engines.lora_engine
        if lora_engine is not None:
            ENGINE_READY.labels(lora_engine.name, "lora").set(int(lora_engine.ready))
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
