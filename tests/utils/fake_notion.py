"""A local fake of the three Notion API calls a publication makes, served over real HTTP.

Notion is a boundary we do not own, so the fake is strict where Notion is: every request must
carry the bearer token and the Notion-Version header, a request holds at most 100 blocks, a
block at most 100 rich-text objects of at most 2,000 characters, a parent exactly one id.
Each breach is answered 400 the way Notion answers (``validation_error``) and recorded in
``violations``, so a test can assert there were none. ``fail(...)`` scripts faults: a 429 with
Retry-After, a 5xx before or after the write was applied, a 4xx with Notion's message.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

TOKEN = "secret_fake_notion_token"
TEXT_LIMIT = 2000
MAX_CHILDREN = 100
PARENT_KINDS = ("page_id", "database_id", "data_source_id")
BLOCK_TYPES = {
    "paragraph",
    "heading_1",
    "heading_2",
    "heading_3",
    "bulleted_list_item",
    "numbered_list_item",
}


@dataclass
class Fault:
    method: str
    path: str  # matched as a prefix of the request path, e.g. "/v1/pages"
    status: int
    retry_after: str | None = None
    code: str | None = None
    message: str | None = None
    after_apply: bool = False  # do the write, then answer the fault (an answer lost in transit)
    times: int = 1


@dataclass
class FakeNotion:
    token: str = TOKEN
    version: str = "2025-09-03"
    pages: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    # Parents the integration may write to; None: any. Others are 404 object_not_found.
    shared: set[str] | None = None
    create_delay_s: float = 0.0
    create_started: threading.Event = field(default_factory=threading.Event)

    def reset(self) -> None:
        self.pages.clear()
        self.requests.clear()
        self.violations.clear()
        self.faults.clear()
        self.shared = None
        self.create_delay_s = 0.0
        self.create_started.clear()

    def fail(self, method: str, path: str, status: int, **kw: Any) -> None:
        self.faults.append(Fault(method, path, status, **kw))

    def calls(self, method: str, prefix: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == method and r["path"].startswith(prefix)]

    # --- the app ------------------------------------------------------------------------------

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/pages", self._create_page, methods=["POST"]),
                Route("/v1/blocks/{block_id}/children", self._append, methods=["PATCH"]),
                Route("/v1/blocks/{block_id}/children", self._list, methods=["GET"]),
            ]
        )

    def _error(self, status: int, code: str, message: str, headers: dict | None = None):
        body = {"object": "error", "status": status, "code": code, "message": message}
        return JSONResponse(body, status_code=status, headers=headers)

    def _refuse(self, message: str) -> JSONResponse:
        self.violations.append(message)
        return self._error(400, "validation_error", message)

    async def _check(self, request: Request) -> tuple[dict[str, Any], JSONResponse | None]:
        body = await request.json() if request.method != "GET" else {}
        self.requests.append(
            {
                "method": request.method,
                "path": request.url.path,
                "query": dict(request.query_params),
                "headers": dict(request.headers),
                "json": body,
            }
        )
        if request.headers.get("authorization") != f"Bearer {self.token}":
            self.violations.append("bad or missing Authorization header")
            return body, self._error(401, "unauthorized", "API token is invalid.")
        if request.headers.get("notion-version") != self.version:
            self.violations.append(f"Notion-Version {request.headers.get('notion-version')!r}")
            return body, self._error(400, "missing_version", "Notion-Version header missing.")
        return body, None

    def _fault(self, request: Request, *, applied: bool) -> JSONResponse | None:
        for fault in self.faults:
            if (
                fault.times > 0
                and fault.method == request.method
                and request.url.path.startswith(fault.path)
                and fault.after_apply == applied
            ):
                fault.times -= 1
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
                code = fault.code or {429: "rate_limited", 503: "service_unavailable"}.get(
                    fault.status, "internal_server_error"
                )
                return self._error(fault.status, code, fault.message or code, headers)
        return None

    def _check_blocks(self, children: Any) -> str | None:
        if not isinstance(children, list):
            return "children must be a list"
        if len(children) > MAX_CHILDREN:
            return f"body.children.length should be ≤ {MAX_CHILDREN}, instead was {len(children)}"
        for i, block in enumerate(children):
            kind = block.get("type")
            if block.get("object") != "block" or kind not in BLOCK_TYPES:
                return f"children[{i}]: not a block of a known type"
            rich = block.get(kind, {}).get("rich_text")
            problem = self._check_rich_text(rich, f"children[{i}].{kind}.rich_text")
            if problem:
                return problem
        return None

    def _check_rich_text(self, rich: Any, where: str) -> str | None:
        if not isinstance(rich, list) or len(rich) > 100:
            return f"{where} should be a list of at most 100 items"
        for j, obj in enumerate(rich):
            content = obj.get("text", {}).get("content")
            if obj.get("type") != "text" or not isinstance(content, str):
                return f"{where}[{j}] is not a text object"
            if len(content) > TEXT_LIMIT:
                return (
                    f"{where}[{j}].text.content.length should be ≤ {TEXT_LIMIT}, "
                    f"instead was {len(content)}"
                )
        return None

    async def _create_page(self, request: Request) -> JSONResponse:
        body, refused = await self._check(request)
        if refused:
            return refused
        self.create_started.set()
        if self.create_delay_s:
            time.sleep(self.create_delay_s)  # blocks this server only: it is the test's
        if fault := self._fault(request, applied=False):
            return fault
        parent = body.get("parent") or {}
        kinds = [k for k in PARENT_KINDS if k in parent]
        if len(kinds) != 1 or parent.get("type", kinds[0]) != kinds[0]:
            return self._refuse(f"parent should have exactly one of {PARENT_KINDS}: {parent}")
        parent_id = parent[kinds[0]]
        if self.shared is not None and parent_id not in self.shared:
            return self._error(
                404,
                "object_not_found",
                f"Could not find page with ID: {parent_id}. Make sure the relevant pages and "
                "databases are shared with your integration.",
            )
        title = (body.get("properties") or {}).get("title", {}).get("title")
        problem = self._check_rich_text(title, "properties.title.title") if title else None
        if title is None or problem:
            return self._refuse(problem or "properties.title.title is required")
        problem = self._check_blocks(body.get("children", []))
        if problem:
            return self._refuse(problem)
        page_id = str(uuid.uuid4())
        self.pages[page_id] = {
            "parent": parent,
            "properties": body["properties"],
            "children": [self._stored(b) for b in body.get("children", [])],
        }
        page = {
            "object": "page",
            "id": page_id,
            "url": f"https://www.notion.so/{page_id.replace('-', '')}",
            "parent": parent,
        }
        return self._fault(request, applied=True) or JSONResponse(page)

    @staticmethod
    def _stored(block: dict[str, Any]) -> dict[str, Any]:
        return {**block, "id": str(uuid.uuid4())}

    async def _append(self, request: Request) -> JSONResponse:
        body, refused = await self._check(request)
        if refused:
            return refused
        if fault := self._fault(request, applied=False):
            return fault
        page = self.pages.get(request.path_params["block_id"])
        if page is None:
            return self._error(404, "object_not_found", "Could not find block.")
        problem = self._check_blocks(body.get("children"))
        if problem:
            return self._refuse(problem)
        added = [self._stored(b) for b in body["children"]]
        page["children"] += added
        answer = {"object": "list", "results": added, "next_cursor": None, "has_more": False}
        return self._fault(request, applied=True) or JSONResponse(answer)

    async def _list(self, request: Request) -> JSONResponse:
        _, refused = await self._check(request)
        if refused:
            return refused
        if fault := self._fault(request, applied=False):
            return fault
        page = self.pages.get(request.path_params["block_id"])
        if page is None:
            return self._error(404, "object_not_found", "Could not find block.")
        size = min(int(request.query_params.get("page_size", 100)), 100)
        start = int(request.query_params.get("start_cursor") or 0)
        results = page["children"][start : start + size]
        more = start + size < len(page["children"])
        return JSONResponse(
            {
                "object": "list",
                "results": results,
                "next_cursor": str(start + size) if more else None,
                "has_more": more,
            }
        )


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run an ASGI app with uvicorn on a free local port; its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "fake server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
