"""The FastAPI application: ``create_app()`` and its lifespan.

Services are built once in the lifespan and kept on ``app.state``; routers read them through
the one-line accessors in ``app/deps.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response

from app.console import install_console
from app.docs import install_docs
from app.errors import install_error_handlers
from app.guard import RequestGuard, public_paths
from app.heavy import install_heavy_limiter
from app.metrics import HTTP_LATENCY, HTTP_REQUESTS
from ttalkkac import __version__, retention
from ttalkkac.logs import configure_logging
from ttalkkac.settings import Settings, get_settings
from ttalkkac.store.db import Database

logger = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    settings.ensure_dirs()
    app.state.db = Database(settings.resolved_database_url)
    app.state.db.create_all()
    install_heavy_limiter(app, settings.heavy_request_threads)
    _prune_plan_history(app)
    from ttalkkac.webhooks import WebhookSender, drain

    # A queued job cancelled here ends in this process: its webhooks are sent from here.
    webhooks = WebhookSender(app.state.db, settings).install()
    if not settings.api_keys:
        logger.warning("API_KEYS is empty: the API is open to anyone who can reach it")
    # Before the engine starts: merged serving then finds only the active adapter's copy. In a
    # thread: removing a merged copy of a large base model takes a while.
    await asyncio.to_thread(retention.sweep_at_start, app.state.db, settings)
    from app.serving import start_serving, stop_serving  # serving: engine loads in background

    await start_serving(app)
    runner = _start_evaluation_runner(app)
    try:
        yield
    finally:
        if runner is not None:
            await runner.stop()
        await stop_serving(app)
        webhooks.uninstall()
        drain(timeout_s=15)
        app.state.db.dispose()


def _prune_plan_history(app: FastAPI) -> None:
    """Retention applies to a service that was stopped, or whose settings were lowered, too."""
    from ttalkkac.plan_history import prune

    with app.state.db.session() as session:
        prune(session, app.state.settings)


def _start_evaluation_runner(app: FastAPI) -> Any:
    """Evaluations generate through this process's engine: run them here when it has one."""
    settings: Settings = app.state.settings
    generator = getattr(app.state, "generator", None)
    app.state.evaluation_runner = None
    if generator is None or not settings.eval_runner_enabled:
        logger.info("no evaluation runner in this process (no engine, or EVAL_RUNNER_ENABLED)")
        return None
    from ttalkkac.evaluation.runner import EvaluationRunner

    runner = EvaluationRunner(app.state.db, settings, generator)
    runner.start()
    app.state.evaluation_runner = runner
    return runner


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    app = FastAPI(
        title="Ttalkkac",
        version=__version__,
        summary="Meeting transcripts to structured project plans with a fine-tuned LLM.",
        lifespan=lifespan,
        # FastAPI's own pages load Swagger UI and ReDoc from a CDN; install_docs serves them.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    install_error_handlers(app)
    install_docs(app)
    install_console(app)

    from app.routers import include_routers

    include_routers(app)
    # Added before request_context so that it runs inside it: the guard's own answers (401,
    # 413) get a request id and are counted like any other.
    app.add_middleware(RequestGuard, settings=settings, public=public_paths(app.routes))

    @app.middleware("http")
    async def request_context(request: Request, call_next) -> Response:  # type: ignore[no-untyped-def]
        request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex[:16]
        request.state.request_id = request_id
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        HTTP_REQUESTS.labels(request.method, path, str(response.status_code)).inc()
        HTTP_LATENCY.labels(request.method, path).observe(time.perf_counter() - started)
        response.headers["X-Request-Id"] = request_id
        return response

    return app
