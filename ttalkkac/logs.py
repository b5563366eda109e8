"""Logging, configured once per process (API, worker, CLI), and what a log line may show.

Every log line goes to stderr; stdout carries only a command's result, so that
``ttalkkac generate --format json > plan.json`` writes JSON.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from urllib.parse import urlsplit, urlunsplit

_configured = False

# Fallback for what urlsplit refuses (a bad port, a broken IPv6 literal): scheme://user:PASSWORD@
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@]*):[^/?#]*@")


def keep_stdout_for_results() -> None:
    """Point vLLM's logging at stderr (its default is stdout). Call before an engine starts."""
    # vLLM applies its logging config when an engine is created, in this process and in the
    # engine's own process, reading the stream from the environment both times; a
    # VLLM_LOGGING_STREAM set by the user stays theirs.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")


def stdout_to_stderr() -> None:
    """For commands without a result (``api``, ``worker``): file descriptor 1 becomes stderr.

    Their output is all logs, some of it written past the logging module: uvicorn's access
    log handler, Celery's banner and shutdown lines (to ``sys.__stdout__``), and the child
    processes they start (vLLM's engine, Celery's pool), which inherit the descriptor.
    """
    sys.stdout.flush()
    os.dup2(2, 1)


def configure_logging(level: str = "INFO") -> None:
    keep_stdout_for_results()
    global _configured
    if _configured:
        return
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    _configured = True


def redact_url(url: str) -> str:
    """``url`` with the password of its userinfo replaced by ``***``: for every log line,
    message or echo that shows a connection URL (REDIS_URL, DATABASE_URL)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return _USERINFO.sub(r"\1:***@", url)
    if password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
