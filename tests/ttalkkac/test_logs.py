"""What a log line may show: connection URLs without their passwords."""

from __future__ import annotations

import pytest

from ttalkkac.logs import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@10.0.0.5:6379/0", "redis://:***@10.0.0.5:6379/0"),
        (
            "rediss://worker:s3cret@redis.internal:6380/1",
            "rediss://worker:***@redis.internal:6380/1",
        ),
        (
            "postgresql+psycopg://ttalkkac:p%40ss:w0rd@db:5432/ttalkkac?sslmode=require",
            "postgresql+psycopg://ttalkkac:***@db:5432/ttalkkac?sslmode=require",
        ),
        ("redis://user:s3cret@[::1]:6379/0", "redis://user:***@[::1]:6379/0"),
        ("redis://:s3cret@host:notaport/0", "redis://:***@host:notaport/0"),  # urlsplit refuses
        # Nothing to hide: unchanged.
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://user@host/0", "redis://user@host/0"),
        (
            "sqla+sqlite:////var/lib/ttalkkac/broker.sqlite",
            "sqla+sqlite:////var/lib/ttalkkac/broker.sqlite",
        ),
        ("sqlite:///var/ttalkkac.db", "sqlite:///var/ttalkkac.db"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url) and "w0rd" not in redact_url(url)
