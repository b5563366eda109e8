"""Logging, configured once per process (API, worker, CLI), and what a log line may show."""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

_configured = False

# Fallback for what urlsplit refuses (a bad port, a broken IPv6 literal): scheme://user:PASSWORD@
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@]*):[^/?#]*@")


def configure_logging(level: str = "INFO") -> None:
    global _configured
    if _configured:
        return
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
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
