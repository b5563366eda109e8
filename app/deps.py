"""Dependencies, declared once: settings, store sessions, API-key check."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
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

_bearer = HTTPBearer(auto_error=False)


def require_api_key(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Every router but health and docs depends on this; open when API_KEYS is empty."""
    if not settings.api_keys:
        return
    token = credentials.credentials if credentials else ""
    if not any(secrets.compare_digest(token, key) for key in settings.api_keys):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or invalid API key (Authorization: Bearer <key>)",
            headers={"WWW-Authenticate": "Bearer"},
        )


AuthDep = Depends(require_api_key)
