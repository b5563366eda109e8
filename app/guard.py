"""Authentication and body bounds, checked before any route reads a byte of the body.

FastAPI reads (and for multipart, spools to disk) a request's body before the route's
dependencies run, so an API-key dependency and a route-level size check come too late: an
unauthenticated client could make the API read an unbounded chunked upload. This pure ASGI
middleware runs first on every request:

- with API_KEYS set, a route that needs a key answers 401 before the body is read (which routes
  are public is read from the routers: those that do not depend on ``require_api_key``);
- without API_KEYS, a request from a network address (an IP outside loopback) answers 403 unless
  ALLOW_UNAUTHENTICATED_NETWORK says so: ``ttalkkac api`` refuses to listen that way, and this
  covers the servers it does not start (``uvicorn app.main:app --host 0.0.0.0``, a proxy in front
  on loopback that forwards the network's clients);
- a declared ``Content-Length`` over the route's limit answers 413 at once, and a body without
  one (chunked) is counted while the route reads it: past the limit the read raises, which the
  app's error handlers answer with 413. Uploads (``POST /datasets``) get MAX_UPLOAD_BYTES plus
  room for the multipart framing, every other route MAX_REQUEST_BYTES.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.deps import api_key_valid, bearer_token, require_api_key
from app.errors import EnvelopeResponse, error_body
from ttalkkac.exposure import is_loopback
from ttalkkac.settings import Settings

# Multipart framing around the uploaded file: allowed on top of MAX_UPLOAD_BYTES.
FORM_OVERHEAD = 64 * 1024
UPLOAD_ROUTES = frozenset({("POST", "/datasets")})

_UNAUTHORIZED = "missing or invalid API key (Authorization: Bearer <key>)"
_NETWORK_WITHOUT_KEY = (
    "this API has no API keys, so it answers this machine (loopback) only: anyone on the network "
    "could train, read and delete everything. Set API_KEYS on the server (clients send "
    "Authorization: Bearer <key>), or ALLOW_UNAUTHENTICATED_NETWORK=true if an open API on this "
    "network is intended."
)


class BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` inside the app: FastAPI re-raises HTTP errors met while it
    reads a body, and the app's handler answers them with the envelope."""

    code = "payload_too_large"

    def __init__(self, message: str) -> None:
        # The client is still sending: close the connection rather than read the rest.
        super().__init__(413, message, headers={"Connection": "close"})


def _needs_key(route: BaseRoute) -> bool:
    if not isinstance(route, APIRoute):
        return False  # /docs, /redoc, /openapi.json: Starlette routes without dependencies
    pending, seen = list(route.dependant.dependencies), set()
    while pending:
        dependant = pending.pop()
        if dependant.call is require_api_key:
            return True
        if id(dependant) not in seen:
            seen.add(id(dependant))
            pending.extend(dependant.dependencies)
    return False


@dataclass(frozen=True)
class PublicPaths:
    """What needs no API key: routes by their exact path, static mounts below their path.

    Two sets, not one with a trailing-slash convention: the console's page is the route "/",
    which as a prefix would make every path public.
    """

    exact: frozenset[str]
    prefixes: frozenset[str]  # each ends with "/": "/docs/" covers "/docs/swagger-ui.css"

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and (
            path in self.exact or any(path.startswith(p) for p in self.prefixes)
        )


def public_paths(routes: Iterable[BaseRoute]) -> PublicPaths:
    """Paths of the routes that need no API key, as the routers declare them."""
    exact, prefixes = set(), set()
    for route in routes:
        path = getattr(route, "path", None)
        if path is None or _needs_key(route):
            continue
        if "{" in path:  # the guard matches exact paths; a public route with parameters is new
            raise ValueError(f"public route {path!r} has path parameters: the guard needs a rule")
        if isinstance(route, Mount):  # static files (the docs', the console's)
            if not path:
                raise ValueError("a public mount at the root would make every path public")
            prefixes.add(f"{path}/")
        else:
            exact.add(path)
    return PublicPaths(frozenset(exact), frozenset(prefixes))


def body_limit(settings: Settings, method: str, path: str) -> tuple[int, str]:
    """The largest body the route takes, and the setting that says so."""
    if (method, path.rstrip("/") or "/") in UPLOAD_ROUTES:
        return settings.max_upload_bytes + FORM_OVERHEAD, "MAX_UPLOAD_BYTES plus form framing"
    return settings.max_request_bytes, "MAX_REQUEST_BYTES"


def too_large_message(size: int, limit: int, setting: str, *, at_least: bool = False) -> str:
    more = "at least " if at_least else ""
    return f"request body is {more}{size:,} bytes; the limit is {limit:,} ({setting})"


class RequestGuard:
    """Pure ASGI middleware (no ``BaseHTTPMiddleware``: it must not touch the body itself)."""

    def __init__(self, app: ASGIApp, *, settings: Settings, public: PublicPaths) -> None:
        self.app = app
        self.settings = settings
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        headers = scope["headers"]
        if (
            not self.settings.api_keys
            and not self.settings.allow_unauthenticated_network
            and network_peer(scope) is not None
        ):
            await self._reply(
                scope, receive, send, 403, "network_without_key", _NETWORK_WITHOUT_KEY
            )
            return
        if (
            self.settings.api_keys
            and path not in self.public
            and not api_key_valid(self.settings, bearer_token(headers))
        ):
            # Unknown paths too: an unauthenticated client learns nothing about the routes.
            await self._reply(scope, receive, send, 401, "http_error", _UNAUTHORIZED)
            return
        limit, setting = body_limit(self.settings, method, path)
        declared = _content_length(headers)
        if declared is not None and declared > limit:
            message = too_large_message(declared, limit, setting)
            await self._reply(scope, receive, send, 413, "payload_too_large", message)
            return

        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(too_large_message(received, limit, setting, at_least=True))
            return message

        await self.app(scope, bounded_receive, send)

    async def _reply(
        self, scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str
    ) -> None:
        request_id = scope.get("state", {}).get("request_id")
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        # The client may still be sending: close the connection rather than read the rest.
        response = EnvelopeResponse(
            error_body(code, message, request_id=request_id),
            status_code=status,
            headers={**(headers or {}), "Connection": "close"},
        )
        await response(scope, receive, send)


def network_peer(scope: Scope) -> str | None:
    """The client's address when it is a network peer (an IP outside loopback), else None.

    A client that is no IP address (a Unix socket, an in-process test client) is not one.
    Behind uvicorn's ``--proxy-headers`` this is the address the proxy forwarded.
    """
    client = scope.get("client")
    if not client:
        return None
    host = str(client[0])
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return None if is_loopback(host) else host


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            return int(value) if value.isdigit() else None
    return None
