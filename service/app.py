"""The FastAPI application: routers, the one error renderer, metrics, and the engine's life."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import stripe
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException

from routers import (
    access,
    billing,
    calendar,
    health,
    integrations,
    jobs,
    offerings,
    organizations,
    programs,
    reports,
    sessions,
    therapists,
    webhooks,
)
from service.core.db import make_async_engine, make_session_factory
from service.core.errors import (
    PROBLEM_BASE,
    DomainError,
    FieldError,
    ValidationFailed,
    from_database_error,
)
from service.core.metrics import MetricsMiddleware
from service.core.settings import Settings, get_settings
from service.integrations import stripe_api
from service.jobs.scheduler import Scheduler, job_context

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"


def problem_response(error: DomainError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return JSONResponse(
        error.problem(), status_code=error.status, media_type=PROBLEM_JSON, headers=headers
    )


def _validation_problem(exc: RequestValidationError) -> ValidationFailed:
    errors = []
    for item in exc.errors():
        loc = [str(part) for part in item.get("loc", ())]
        where = loc[0] if loc else "body"
        field = ".".join(loc[1:]) or where
        message = str(item.get("msg", "is invalid")).removeprefix("Value error, ")
        errors.append(FieldError(field, message, str(item.get("type", "invalid")), where))
    return ValidationFailed(errors)


async def _on_domain_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return problem_response(exc)


async def _on_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return problem_response(_validation_problem(exc))


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
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


async def _on_database_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    orig: Any = exc.orig
    diag = getattr(orig, "diag", None)
    mapped = from_database_error(
        getattr(orig, "sqlstate", None), getattr(diag, "constraint_name", None)
    )
    if mapped is None:
        return await _on_unexpected_error(request, exc)
    return problem_response(mapped)


async def _on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        {
            "type": PROBLEM_BASE + "internal",
            "title": "Internal server error",
            "status": 500,
            "detail": "The server failed to answer; the change, if any, was not saved.",
        },
        status_code=500,
        media_type=PROBLEM_JSON,
    )


def operation_id(route: APIRoute) -> str:
    """Stable OpenAPI operation ids: the route function's name (unique across the app)."""
    return route.name


def create_app(
    settings: Settings | None = None,
    *,
    engine: AsyncEngine | None = None,
    session_factory: async_sessionmaker[AsyncSession] | None = None,
    stripe_client: stripe.StripeClient | None = None,
) -> FastAPI:
    """Build the app. By default it opens an engine on DATABASE_URL for its lifetime; tests pass
    their engine and a session factory bound to a transaction that they roll back. The Stripe
    client comes from the settings (none without STRIPE_API_KEY) unless one is given."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if engine is not None:
            yield
            return
        if not settings.database_url:
            raise RuntimeError("DATABASE_URL is not set; start the app with `ensemble serve`")
        own_engine = make_async_engine(settings.database_url, pool_size=settings.db_pool_size)
        app.state.engine = own_engine
        app.state.session_factory = make_session_factory(own_engine)
        background = None
        if settings.scheduler:
            background = Scheduler(
                job_context(settings, app.state.session_factory, app.state.stripe)
            )
            await background.start()
        try:
            yield
        finally:
            if background is not None:
                await background.stop()
            await own_engine.dispose()

    app = FastAPI(
        title="Ensemble",
        version="0.1.0",
        description="Booking and billing for music therapy providers.",
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
    )
    app.state.settings = settings
    app.state.stripe = stripe_client or stripe_api.make_client(settings)
    if engine is not None:
        app.state.engine = engine
        app.state.session_factory = session_factory or make_session_factory(engine)
    for router in (
        health.router,
        access.router,
        organizations.router,
        therapists.router,
        offerings.router,
        programs.router,
        sessions.router,
        calendar.router,
        reports.router,
        billing.router,
        integrations.router,
        webhooks.router,
        jobs.router,
    ):
        app.include_router(router)
    app.add_middleware(MetricsMiddleware)
    app.add_exception_handler(DomainError, _on_domain_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(DBAPIError, _on_database_error)
    app.add_exception_handler(Exception, _on_unexpected_error)
    return app
