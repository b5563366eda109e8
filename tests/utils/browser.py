"""A real browser for tests: the app under uvicorn on a loopback port, Debian's chromium.

Playwright's own browser download cannot work without outside network, so the tests launch
the distribution's ``chromium`` (scripts/test.sh installs it) and skip where it is absent.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
import uvicorn
from fastapi import FastAPI

if TYPE_CHECKING:
    from fastapi.testclient import TestClient
    from playwright.sync_api import Page

CHROMIUM = Path("/usr/bin/chromium")
# No sandbox: CI runs as root. The rest keeps Chromium from calling home (updates, sync).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.is_file(),
    reason=f"{CHROMIUM} not found (scripts/test.sh installs Debian's chromium as root)",
)
REPO_ROOT = Path(__file__).resolve().parents[2]
FAILURE_SCREENSHOTS = REPO_ROOT / "var" / "test-screenshots"
# TTALKKAC_SCREENSHOTS=1 refreshes the README's screenshots from a passing run.
README_SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def is_local(url: str) -> bool:
    """True for loopback URLs and in-page data (``data:``, ``blob:`` made by the page)."""
    parts = urlsplit(url)
    return parts.scheme in {"data", "blob", "about"} or parts.hostname in LOOPBACK_HOSTS


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` (lifespan included) on a free loopback port; yields its base URL."""
    # Binding port 0 here and handing uvicorn the socket: no race for a "free" port.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@contextmanager
def serve_client_app(client: TestClient) -> Iterator[str]:
    """Serve the app of a started ``TestClient`` over loopback too, on the client's event loop.

    For the app the vLLM tests share: its engine (vLLM's ``AsyncLLM``) belongs to the loop its
    lifespan ran on, the client's portal, so a server on another loop could not use it, and a
    second app would start a second engine. Lifespan off: the client ran it.
    """
    assert client.portal is not None, "the TestClient must be started (used as a context manager)"
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(client.app, lifespan="off", log_level="warning"))
    serving = client.portal.start_task_soon(server.serve, [sock])
    deadline = time.monotonic() + 60
    while not server.started:
        if serving.done() or time.monotonic() > deadline:
            serving.result(timeout=0)  # its error, if it has one
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        serving.result(timeout=30)
        sock.close()


@contextmanager
def screenshot_on_failure(page: Page, name: str) -> Iterator[None]:
    """Keep what the browser showed when an assertion fails; optionally the README's copy."""
    try:
        yield
    except BaseException:
        FAILURE_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = FAILURE_SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        print(f"screenshot of the failure: {path}")
        raise
    if os.environ.get("TTALKKAC_SCREENSHOTS") == "1":
        README_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(README_SCREENSHOTS / f"{name}.png"))
