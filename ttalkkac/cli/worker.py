"""``ttalkkac worker``: the Celery training worker (one job at a time, a fresh process per job)."""

from __future__ import annotations

from typing import Annotated

import typer

from ttalkkac.logs import configure_logging, stdout_to_stderr
from ttalkkac.settings import get_settings


def worker(
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", help="Log level.")] = "INFO",
    hostname: Annotated[
        str | None, typer.Option(help="Celery node name (default: celery@<host>).")
    ] = None,
) -> None:
    """Run the training worker on the training queue (broker: REDIS_URL or the fallback)."""
    from worker.celery_app import start_worker

    stdout_to_stderr()  # no result, only logs; Celery prints its banner to sys.__stdout__
    settings = get_settings()
    configure_logging(loglevel)
    settings.ensure_dirs()
    start_worker(settings, loglevel=loglevel, hostname=hostname)
