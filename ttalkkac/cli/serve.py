"""``ttalkkac api``: the HTTP API (FastAPI + the generation engine) under uvicorn."""

from __future__ import annotations

import copy
import logging
from typing import Annotated, Any

import typer

# ``ttalkkac up`` polls /ready once a second while the engine loads and marks its polls with
# this query: uvicorn's access log record holds the request line but no headers to match on.
LAUNCHER_READY_PATH = "/ready?probe=ttalkkac-up"


class DropLauncherPolls(logging.Filter):
    """Leaves the launcher's own /ready polls out of the access log; every other line stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn logs access as (client, method, path with query, HTTP version, status).
        args = record.args
        return not (isinstance(args, tuple) and len(args) == 5 and args[2] == LAUNCHER_READY_PATH)


def log_config() -> dict[str, Any]:
    """uvicorn's default logging, with the launcher's polls filtered from the access log."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"launcher_polls": {"()": DropLauncherPolls}}
    config["loggers"]["uvicorn.access"]["filters"] = ["launcher_polls"]
    return config


def api(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
) -> None:
    """Serve the API. The engine loads in the background: GET /ready says when it can generate."""
    import uvicorn

    from ttalkkac.exposure import listen_refusal
    from ttalkkac.logs import stdout_to_stderr
    from ttalkkac.settings import get_settings

    settings = get_settings()
    if refusal := listen_refusal(host, settings):
        typer.echo(f"error: {refusal}", err=True)
        raise typer.Exit(2)
    stdout_to_stderr()  # a server has no result: its access log goes to stderr with the rest
    # One process: the engine lives in it (vLLM starts its own engine process beside it).
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        log_config=log_config(),
        timeout_graceful_shutdown=30,
    )
