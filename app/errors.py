"""One JSON error envelope for every failure, and the one map from domain errors to statuses.

Envelope: ``{"error": {"code": str, "message": str, "detail": any, "request_id": str}}``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ttalkkac import errors

logger = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[errors.TtalkkacError], int] = {
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.PayloadTooLarge: 413,
    errors.DataError: 422,
    errors.InvalidInput: 422,
    errors.RetryLater: 503,  # EngineUnavailable, UpstreamUnavailable
    errors.GenerationInvalid: 502,
    errors.DeadlineExceeded: 504,
}


def status_for(exc: errors.TtalkkacError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


class EnvelopeResponse(JSONResponse):
    """A JSON answer that cannot fail to encode: an error about bad text may quote it.

    A lone surrogate echoed from a request (a field name, a value in a message) makes the UTF-8
    encoding of ``ensure_ascii=False`` raise; ASCII escapes then spell it as valid JSON.
    """

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def error_body(code: str, message: str, detail: Any = None, request_id: str | None = None) -> dict:
    """The envelope, for handlers and for the middleware that answers before any route runs."""
    return {
        "error": {
            "code": code,
            "message": message,
            "detail": jsonable_encoder(detail),
            "request_id": request_id,
        }
    }


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    detail: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = error_body(code, message, detail, getattr(request.state, "request_id", None))
    return EnvelopeResponse(body, status_code=status, headers=headers)


def without_data_dir(value: Any, data_dir: str) -> Any:
    """``value`` with the managed folder's absolute path written as ``DATA_DIR``.

    Domain errors name the files they are about (an adapter folder that is missing, a model
    folder that is not allowed); the client needs to know which one, not where the server keeps
    its data.
    """
    if isinstance(value, str):
        return value.replace(data_dir, "DATA_DIR") if data_dir in value else value
    if isinstance(value, dict):
        return {k: without_data_dir(v, data_dir) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [without_data_dir(v, data_dir) for v in value]
    return value


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.TtalkkacError)
    async def _domain(request: Request, exc: errors.TtalkkacError) -> JSONResponse:
        headers = None
        if isinstance(exc, errors.RetryLater) and exc.retry_after_s:
            headers = {"Retry-After": str(exc.retry_after_s)}
        data_dir = str(request.app.state.settings.data_dir)
        return error_response(
            request,
            status_for(exc),
            exc.code,
            without_data_dir(exc.message, data_dir),
            without_data_dir(exc.detail, data_dir),
            headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"], "type": e["type"]}
            for e in exc.errors()
        ]
        fields = ", ".join(p["field"] for p in problems)
        return error_response(
            request, 422, "validation_error", f"invalid request: {fields}", problems
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(
            request,
            exc.status_code,
            getattr(exc, "code", "http_error"),  # app.guard's BodyTooLarge names its own
            str(exc.detail),
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unknown(request: Request, exc: Exception) -> JSONResponse:
        logger.exception(
            "unhandled error on %s %s [request_id=%s]",
            request.method,
            request.url.path,
            getattr(request.state, "request_id", None),
        )
        from app.metrics import UNHANDLED_ERRORS

        UNHANDLED_ERRORS.inc()
        return error_response(request, 500, "internal_error", "internal server error")
