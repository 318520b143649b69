"""Every error a client sees, rendered one way: RFC 9457 problem+json. Domain errors carry their
own status and type (service.core.errors); this module turns them, request validation failures,
framework errors, database constraint violations and anything unexpected into responses."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.types import PATTERN_MESSAGES
from service.core.errors import (
    PROBLEM_BASE,
    DatabaseUnavailable,
    DomainError,
    FieldError,
    ServiceUnavailable,
    ValidationFailed,
    from_database_error,
)

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"
INTERNAL_ERROR = {
    "type": PROBLEM_BASE + "internal",
    "title": "Internal server error",
    "status": 500,
    "detail": "The server failed to answer; the change, if any, was not saved.",
}


def problem_response(error: DomainError) -> JSONResponse:
    headers: dict[str, str] = {}
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(error, ServiceUnavailable):
        headers["Retry-After"] = str(error.retry_after)
    return JSONResponse(
        error.problem(), status_code=error.status, media_type=PROBLEM_JSON, headers=headers
    )


def internal_error_response() -> JSONResponse:
    return JSONResponse(
        INTERNAL_ERROR, status_code=500, media_type=PROBLEM_JSON, headers={"Retry-After": "1"}
    )


def database_problem(exc: DBAPIError) -> DomainError | None:
    """The domain error a database error means (a constraint violation, a deadline, a lost
    connection), or None for a real fault of the server's own."""
    orig: Any = exc.orig
    diag = getattr(orig, "diag", None)
    sqlstate = getattr(orig, "sqlstate", None)
    mapped = from_database_error(sqlstate, getattr(diag, "constraint_name", None))
    if mapped is None and sqlstate is None and isinstance(exc, OperationalError):
        # Refused, reset or timed out before the server said anything: no SQLSTATE.
        return DatabaseUnavailable("The database cannot be reached; nothing was saved")
    return mapped


def database_error_response(exc: DBAPIError | PoolTimeout) -> JSONResponse:
    """The answer for a database error outside a route (the unit of work's own statements)."""
    if isinstance(exc, PoolTimeout):
        return problem_response(
            DatabaseUnavailable("Every database connection is busy; nothing was saved")
        )
    mapped = database_problem(exc)
    if mapped is None:
        log.error("database error", exc_info=exc)
        return internal_error_response()
    return problem_response(mapped)


async def on_pool_timeout(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PoolTimeout)
    return database_error_response(exc)


def _validation_problem(exc: RequestValidationError) -> ValidationFailed:
    errors = []
    for item in exc.errors():
        loc = [str(part) for part in item.get("loc", ())]
        where = loc[0] if loc else "body"
        field = ".".join(loc[1:]) or where
        message = str(item.get("msg", "is invalid")).removeprefix("Value error, ")
        if item.get("type") == "string_pattern_mismatch":
            message = PATTERN_MESSAGES.get(str(item.get("ctx", {}).get("pattern")), message)
        errors.append(FieldError(field, message, str(item.get("type", "invalid")), where))
    return ValidationFailed(errors)


async def on_domain_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return problem_response(exc)


async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return problem_response(_validation_problem(exc))


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    titles = {404: "Not found", 405: "Method not allowed"}
    details = {
        404: f"No resource at {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }
    error = DomainError(details.get(exc.status_code, str(exc.detail)))
    error.status = exc.status_code
    error.title = titles.get(exc.status_code, str(exc.detail))
    error.slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    response = problem_response(error)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def on_database_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    mapped = database_problem(exc)
    if mapped is None:
        return await on_unexpected_error(request, exc)
    return problem_response(mapped)


async def on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, DBAPIError | PoolTimeout):  # raised where no route handler saw it
        return database_error_response(exc)
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return internal_error_response()


HANDLERS = (
    (DomainError, on_domain_error),
    (RequestValidationError, on_validation_error),
    (StarletteHTTPException, on_http_error),
    (DBAPIError, on_database_error),
    (PoolTimeout, on_pool_timeout),
    (Exception, on_unexpected_error),
)
