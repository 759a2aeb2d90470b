"""The one place where errors become HTTP answers: `{"error": kind, "detail": text}`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from autoswarm.coordinator.store import UNAVAILABLE
from autoswarm.shared.errors import (
    AutoswarmError,
    Conflict,
    Forbidden,
    InvalidInput,
    LineageError,
    MergeConflict,
    NotFound,
    PayloadTooLarge,
    StaleLease,
    TaskError,
    TooMany,
    Unauthorized,
)

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 1  # the embedded Redis restarts in 0.2-1.1 s
AWAY = "the coordinator's store is away for a moment; retry shortly"


# Most specific first: the first class an error is an instance of decides.
STATUS: tuple[tuple[type[AutoswarmError], int, str], ...] = (
    (StaleLease, 409, "stale_lease"),
    (MergeConflict, 409, "conflict"),
    (Conflict, 409, "conflict"),
    (Unauthorized, 401, "unauthorized"),
    (Forbidden, 403, "forbidden"),
    (NotFound, 404, "not_found"),
    (PayloadTooLarge, 413, "too_large"),
    (TooMany, 429, "too_many"),
    (InvalidInput, 422, "invalid"),
    (TaskError, 422, "invalid_task"),
    (LineageError, 500, "lineage"),
)


def error_response(status: int, kind: str, detail: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_S)}
    return JSONResponse({"error": kind, "detail": detail}, status_code=status, headers=headers)


def status_of(exc: AutoswarmError) -> tuple[int, str]:
    for cls, status, kind in STATUS:
        if isinstance(exc, cls):
            return status, kind
    return 500, "internal"


async def _autoswarm_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AutoswarmError)
    status, kind = status_of(exc)
    if status >= 500:
        logger.error("%s %s: %s", request.method, request.url.path, exc)
    return error_response(status, kind, str(exc))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return error_response(422, "invalid", "; ".join(parts) or "invalid request")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http")
    return error_response(exc.status_code, kind, str(exc.detail))


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("%s %s: unexpected error", request.method, request.url.path)
    return error_response(500, "internal", f"{type(exc).__name__}: try again later")


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    # A handler of its own classes, not of Exception: answered here, not re-raised to the
    # server (which would log a second traceback for each request while Redis restarts).
    request.app.state.ctx.store.note_away(f"{request.method} {request.url.path}", exc)
    return error_response(503, "unavailable", AWAY)


def install_error_handlers(app: FastAPI) -> None:
    for cls in UNAVAILABLE:
        app.add_exception_handler(cls, _unavailable)
    app.add_exception_handler(AutoswarmError, _autoswarm_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
