"""``ttalkkac api``: the HTTP API (FastAPI + the generation engine) under uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer


def api(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
) -> None:
    """Serve the API. The engine loads in the background: GET /ready says when it can generate."""
    import uvicorn

    from ttalkkac.logs import stdout_to_stderr
    from ttalkkac.settings import get_settings

    stdout_to_stderr()  # a server has no result: its access log goes to stderr with the rest
    settings = get_settings()
    # One process: the engine lives in it (vLLM starts its own engine process beside it).
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=30,
    )
