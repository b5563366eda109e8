"""The web console at ``/``: a small static app (HTML, CSS, one script) served by the API itself.

No build step and nothing from another host: the page and its files ship in ``app/static`` and
call the same HTTP API as curl does (``/generate/stream``, ``/datasets``, ``/train``,
``/adapters``, ``/ready``), sending the API key a user typed, kept in the browser session. The
page and its files hold no data, so they are public like the docs (``app.guard`` reads that from
the routes: neither depends on the API key); every call the page makes still needs the key.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
CONSOLE_URL = "/"
FILES_URL = "/console"  # the page refers to its files relative to itself: console/console.js
# The browser enforces what the tests check: the page loads and calls only its own origin, and
# runs no inline script.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'none'"
)


def install_console(app: FastAPI) -> None:
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")

    @app.get(CONSOLE_URL, include_in_schema=False)
    async def console() -> HTMLResponse:
        return HTMLResponse(
            page,
            headers={
                "Content-Security-Policy": CONTENT_SECURITY_POLICY,
                "Cache-Control": "no-cache",
            },
        )

    app.mount(FILES_URL, StaticFiles(directory=STATIC_DIR), name="console")
