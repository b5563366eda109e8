"""Which Celery broker to use: REDIS_URL, else a local Redis if one answers, else embedded.

The embedded broker is kombu's SQLAlchemy transport on a SQLite file under the data folder, so
that the one-command local setup works on a machine with no Redis at all.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

from ttalkkac.settings import Settings

logger = logging.getLogger(__name__)

LOCAL_REDIS = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class Broker:
    url: str
    kind: str  # "redis" | "embedded"
    reason: str


def _redis_answers(host: str = "127.0.0.1", port: int = 6379, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def resolve_broker(settings: Settings) -> Broker:
    if settings.redis_url:
        # `ttalkkac up` hands its resolved URL to its children as REDIS_URL, embedded included.
        kind = "embedded" if settings.redis_url.startswith("sqla+") else "redis"
        return Broker(settings.redis_url, kind, "REDIS_URL is set")
    if _redis_answers():
        return Broker(LOCAL_REDIS, "redis", "REDIS_URL unset; a local Redis answered")
    path = settings.data_dir / "broker.sqlite"
    return Broker(
        f"sqla+sqlite:///{path}",
        "embedded",
        "REDIS_URL unset and no Redis on 127.0.0.1:6379: embedded SQLite broker",
    )
