"""Probes for orchestrators and the metrics endpoint; no API key needed."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from routers.deps import AppSettings
from service.core import metrics, migrate

router = APIRouter(tags=["operations"])
READY_WITHIN = 3.0  # seconds


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        503: {
            "description": "Database unreachable or schema behind (the same body as 200's)",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def readyz(request: Request) -> JSONResponse:
    """Ready for traffic: the database answers and its schema is at the code's migration head."""
    head = migrate.head_revision()
    try:
        # A database that silently stops answering must not hang the probe.
        async with asyncio.timeout(READY_WITHIN), request.app.state.engine.connect() as conn:
            current = await conn.run_sync(migrate.current_revision)
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        return JSONResponse(
            {"status": "unavailable", "database": "unreachable", "detail": type(exc).__name__},
            status_code=503,
            headers={"Retry-After": "5"},
        )
    ready = current == head
    return JSONResponse(
        {
            "status": "ok" if ready else "unavailable",
            "database": "ok",
            "schema_revision": current,
            "expected_revision": head,
        },
        status_code=200 if ready else 503,
    )


@router.get("/metrics", response_class=Response)
async def prometheus_metrics(request: Request, settings: AppSettings) -> Response:
    """Prometheus text exposition. With ENSEMBLE_METRICS_TOKEN set, only with
    `Authorization: Bearer <token>` (401 otherwise); 404 when metrics have their own port."""
    metrics.check_access(settings, request.headers.get("authorization"))
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)
