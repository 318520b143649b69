"""Prometheus metrics: request counts and latencies by route template (never by raw path, so
ids do not explode the label space)."""

from __future__ import annotations

import hmac
import time

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.errors import NotFound, Unauthorized
from service.core.settings import Settings

REQUESTS = Counter(
    "ensemble_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
LATENCY = Histogram(
    "ensemble_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
)

# Background work (the scheduler's process; `ensemble worker --metrics-port` exposes them).
WEBHOOK_DELIVERIES = Counter(
    "ensemble_webhook_deliveries_total",
    "Webhook delivery attempts by result: sent (2xx), retried (failed, will try again), "
    "failed (retry schedule used up)",
    ["result"],
)
WEBHOOK_DURATION = Histogram(
    "ensemble_webhook_attempt_duration_seconds", "Time for one webhook attempt to answer"
)
OUTBOX_LAG = Gauge(
    "ensemble_outbox_lag_seconds",
    "How late the oldest webhook delivery picked up in the last pass was (0 when idle)",
)
JOB_RUNS = Counter("ensemble_job_runs_total", "Scheduled job runs by outcome", ["job", "outcome"])
JOB_DURATION = Histogram("ensemble_job_duration_seconds", "Time a job run took", ["job"])
RATE_LIMIT_STORE_FAILURES = Counter(
    "ensemble_rate_limit_store_failures_total",
    "Times the rate limit store could not be asked (requests then go through unlimited)",
)
SCHEDULER_LEADER = Gauge(
    "ensemble_scheduler_leader", "1 while this process holds the scheduler lock and runs jobs"
)


def check_access(settings: Settings, authorization: str | None) -> None:
    """/metrics on the API: served only where metrics have no port of their own, and only with
    `Authorization: Bearer <ENSEMBLE_METRICS_TOKEN>` when a token is set (compared in constant
    time)."""
    if settings.metrics_port is not None:
        raise NotFound(f"Metrics are served on port {settings.metrics_port}, not by the API")
    if settings.metrics_token is None:
        return
    scheme, _, credential = (authorization or "").partition(" ")
    expected = settings.metrics_token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(credential.strip().encode(), expected):
        raise Unauthorized(
            "Send the metrics token as 'Authorization: Bearer <ENSEMBLE_METRICS_TOKEN>'"
        )


def exposition() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            REQUESTS.labels(scope["method"], template, str(status)).inc()
            LATENCY.labels(scope["method"], template).observe(time.perf_counter() - started)
