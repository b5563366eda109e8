"""ttalkkac.logs: log lines on stderr (vLLM's included, so stdout is left to results), and
connection URLs shown without their passwords."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from ttalkkac.logs import redact_url

# In a fresh process: our logging first (as every command does), then vLLM's own logging
# config as an engine applies it when it starts (in the engine's process too).
SCRIPT = textwrap.dedent(
    """
    import logging, sys
    from ttalkkac.logs import configure_logging
    configure_logging("INFO")
    from vllm.config.logging import LoggingConfig
    from vllm.logger import configure_logging as vllm_configure_logging, init_logger
    vllm_configure_logging(LoggingConfig())
    handlers = logging.getLogger("vllm").handlers
    assert handlers, "vLLM configured no handler: the check below would prove nothing"
    assert all(h.stream is sys.stderr for h in handlers), [h.stream for h in handlers]
    init_logger("vllm.engine").info("hello from vllm")
    logging.getLogger("ttalkkac.x").info("hello from ttalkkac")
    """
)


def test_vllm_and_our_logs_go_to_stderr() -> None:
    env = {k: v for k, v in os.environ.items() if k != "VLLM_LOGGING_STREAM"}
    # Importing TRL earlier in the test session sets VLLM_LOGGING_LEVEL=ERROR for the process,
    # which would hide the INFO line this test looks for.
    env["VLLM_LOGGING_LEVEL"] = "INFO"
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, env=env
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout == ""
    assert "hello from vllm" in run.stderr and "hello from ttalkkac" in run.stderr


def test_an_explicit_vllm_stream_is_kept(monkeypatch) -> None:
    from ttalkkac.logs import keep_stdout_for_results

    monkeypatch.setenv("VLLM_LOGGING_STREAM", "ext://sys.stdout")
    keep_stdout_for_results()
    assert os.environ["VLLM_LOGGING_STREAM"] == "ext://sys.stdout"


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
