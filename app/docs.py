"""GET /docs (Swagger UI) and /redoc, served from a package instead of a CDN.

FastAPI's own docs pages load their JavaScript and CSS from a CDN, so on a host without outside
network (the GPU servers this service is meant for often are) they render blank. The
``fastapi-standalone-docs`` package ships Swagger UI and ReDoc, each beside its licence file
(``/docs/LICENSE``, ``/redoc/redoc.standalone.js.LICENSE.txt``), with ReDoc's logo made local.
Only its files are used: its ``StandaloneDocs`` patches FastAPI's functions process-wide.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_standalone_docs
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(fastapi_standalone_docs.__file__).parent / "static"
DOCS_URL = "/docs"
REDOC_URL = "/redoc"
FAVICON_PATH = f"{DOCS_URL}/fastapi/favicon.png"
# validatorUrl: Swagger UI would otherwise send the spec to validator.swagger.io for a badge.
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}


def install_docs(app: FastAPI) -> None:
    """Add the docs pages and their files to an app built with ``docs_url=redoc_url=None``.

    Public like FastAPI's own pages (no API key). No OAuth2 redirect page: the API
    authenticates with a bearer key, so Swagger UI has no OAuth2 flow to come back from.
    """
    openapi_url = app.openapi_url or "/openapi.json"

    def prefix(request: Request) -> str:
        # Behind a proxy that mounts the API under a path, every URL in the page needs it.
        return request.scope.get("root_path", "").rstrip("/")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui_html(request: Request) -> HTMLResponse:
        root = prefix(request)
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_URL}/swagger-ui.css",
            swagger_favicon_url=root + FAVICON_PATH,
            oauth2_redirect_url=None,
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc_html(request: Request) -> HTMLResponse:
        root = prefix(request)
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{REDOC_URL}/redoc.standalone.js",
            redoc_favicon_url=root + FAVICON_PATH,
            with_google_fonts=False,
        )

    # The favicon's mount before /docs's: Starlette takes the first mount whose prefix matches.
    # ReDoc loads its logo from <page path>/logo-mini.svg, hence the files under /redoc itself.
    app.mount(f"{DOCS_URL}/fastapi", StaticFiles(directory=STATIC_DIR / "fastapi"))
    app.mount(DOCS_URL, StaticFiles(directory=STATIC_DIR / "swagger"))
    app.mount(REDOC_URL, StaticFiles(directory=STATIC_DIR / "redoc"))
