"""Dependencies, declared once: settings, store sessions, API-key check, pagination bounds."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from ttalkkac.settings import Settings
from ttalkkac.store.db import Database


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_database(request: Request) -> Database:
    return request.app.state.db


def get_session(db: Annotated[Database, Depends(get_database)]) -> Iterator[Session]:
    with db.session() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
DatabaseDep = Annotated[Database, Depends(get_database)]
# scope="function": commit before the response is sent. With the default ("request") scope the
# commit runs after the client has its answer, so an immediate follow-up request (POST /datasets,
# then POST /train with the returned id) could miss the row.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

# Offsets and cursors reach SQL as 64-bit integers: SQLite raises OverflowError past 2**63 - 1
# (a 500). No listing is that long; 2**31 - 1 keeps every driver's integer type happy.
MAX_OFFSET = 2**31 - 1
OffsetQuery = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Rows to skip.")]

# --- API keys --------------------------------------------------------------------------------


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The token of ``Authorization: Bearer <token>`` in raw ASGI headers, as sent (bytes)."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token if scheme.lower() == b"bearer" and token else None
    return None


def api_key_valid(settings: Settings, token: bytes | None) -> bool:
    """Whether ``token`` is one of API_KEYS (always true when none is configured).

    Compared as bytes: ``compare_digest`` refuses ``str`` with non-ASCII characters (a
    ``TypeError``, answered 500), and a header's bytes are what the client sent. Keys are
    configured as text; their UTF-8 bytes are what a client sends for them.
    """
    if not settings.api_keys:
        return True
    if not token:
        return False
    # Every key is compared, match or not, so the time taken does not say which one matched.
    matches = [hmac.compare_digest(token, key.encode("utf-8")) for key in settings.api_keys]
    return any(matches)


def request_has_api_key(request: Request, settings: Settings) -> bool:
    return api_key_valid(settings, bearer_token(request.scope.get("headers", [])))


_bearer = HTTPBearer(auto_error=False)


def require_api_key(
    request: Request,
    settings: SettingsDep,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Every router but health and docs depends on this; open when API_KEYS is empty.

    ``_credentials`` declares the bearer scheme in the OpenAPI document (Swagger's Authorize);
    the check reads the raw header bytes.
    """
    if not request_has_api_key(request, settings):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or invalid API key (Authorization: Bearer <key>)",
            headers={"WWW-Authenticate": "Bearer"},
        )


AuthDep = Depends(require_api_key)
