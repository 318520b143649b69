"""The composition root: builds the FastAPI application from its routers, the unit of work, the
error renderers and metrics, and owns the engine (and the scheduler) for the app's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import stripe
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from routers import (
    api_keys,
    audit,
    billing,
    calendar,
    health,
    integrations,
    jobs,
    me,
    offerings,
    openapi,
    organizations,
    portal,
    programs,
    reports,
    sessions,
    therapists,
    webhooks,
)
from routers.body_limit import BodyLimit
from routers.header_guard import HeaderGuard
from routers.problems import HANDLERS
from routers.rate_limit import RateLimit
from routers.unit_of_work import UnitOfWork
from service.core import log_redaction, process
from service.core.db import (
    Deadlines,
    make_async_engine,
    make_read_session_factory,
    make_session_factory,
)
from service.core.metrics import MetricsMiddleware
from service.core.settings import Settings
from service.integrations import stripe_api
from service.jobs.scheduler import Scheduler, job_context

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    me.router,
    api_keys.router,
    audit.router,
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
    *portal.ROUTERS,
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
    routers: Sequence[APIRouter] = ROUTERS,
) -> FastAPI:
    """Build the app. Settings come from the environment unless given (each app keeps its
    own: two apps with different settings can live in one process). By default it opens an
    engine on DATABASE_URL for its lifetime; tests pass their engine and a session factory
    bound to a transaction that they roll back. The Stripe client comes from the settings
    (none without STRIPE_API_KEY) unless one is given. Every route of every router runs in
    the unit of work (routers.unit_of_work); no router opts in."""
    settings = settings or Settings()
    log_redaction.install()  # whoever configures logging, no record carries a credential

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if engine is not None:
            yield
            return
        if not settings.database_url:
            raise RuntimeError("DATABASE_URL is not set; start the app with `ensemble serve`")
        own_engine = make_async_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            deadlines=Deadlines.for_requests(settings),
        )
        app.state.engine = own_engine
        app.state.session_factory = make_session_factory(own_engine)
        app.state.read_session_factory = make_read_session_factory(own_engine)
        # Jobs wait longer than requests may: the scheduler has its own small pool.
        job_engine = make_async_engine(
            settings.database_url, pool_size=2, deadlines=Deadlines.for_jobs(settings)
        )
        background = None
        if settings.scheduler:
            background = Scheduler(
                job_context(settings, make_session_factory(job_engine), app.state.stripe)
            )
            await background.start()
        process.settle_after_startup()
        try:
            yield
        finally:
            if background is not None:
                await background.stop()
            await job_engine.dispose()
            await own_engine.dispose()

    app = FastAPI(
        title="Ensemble",
        version="0.1.0",
        description="Booking and billing for music therapy providers.",
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
        # ENSEMBLE_DOCS=false: no /docs, /redoc or /openapi.json (404); `ensemble openapi`
        # still prints the document.
        docs_url="/docs" if settings.docs else None,
        redoc_url="/redoc" if settings.docs else None,
        openapi_url="/openapi.json" if settings.docs else None,
        # One schema per model (not -Input and -Output twins): generated clients get one class.
        separate_input_output_schemas=False,
    )
    app.state.settings = settings
    app.state.stripe = stripe_client or stripe_api.make_client(settings)
    if engine is not None:
        app.state.engine = engine
        app.state.session_factory = session_factory or make_session_factory(engine)
        # A test's own factory (bound to a transaction it rolls back) serves its reads too.
        app.state.read_session_factory = (
            session_factory if session_factory is not None else make_read_session_factory(engine)
        )
    for router in routers:
        app.include_router(router)
    app.add_middleware(UnitOfWork)
    app.add_middleware(BodyLimit)  # outside the unit of work: bodies are read before it
    app.add_middleware(RateLimit)  # outside both: an abusive client costs no read, no query
    app.add_middleware(HeaderGuard)  # before anything reads a header (the rate limit's key)
    app.add_middleware(MetricsMiddleware)
    for error, handler in HANDLERS:
        app.add_exception_handler(error, handler)
    openapi.install(app)
    return app
