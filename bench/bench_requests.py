"""Per-request cost of the foundation, as ratios against /healthz in the same run.

Run by hand: `.venv/bin/python bench/bench_requests.py [--requests N]`. It starts a throwaway
embedded PostgreSQL, drives the real app in-process through httpx, and prints, for each call,
the median latency and its ratio to the no-database baseline. Numbers are for comparing
changes on one machine, not absolute claims.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx

from bench.scratch import scratch_database
from service import bootstrap
from service.app import create_app
from service.core import migrate
from service.core.settings import Settings


async def timed(n: int, call: Callable[[int], Awaitable[httpx.Response]]) -> float:
    samples = []
    for i in range(n):
        started = time.perf_counter()
        response = await call(i)
        samples.append(time.perf_counter() - started)
        assert response.status_code < 400, response.text
    return statistics.median(samples)


async def run(requests: int, url: str) -> None:
    settings = Settings(database_url=url)
    migrate.upgrade(url)
    key = await bootstrap.create_key(settings, role="admin", name="bench")
    auth = {"Authorization": f"Bearer {key}"}
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as http,
    ):
        for i in range(200):
            body = {"name": f"Org {i}", "kind": "school", "timezone": "America/Edmonton"}
            await http.post("/v1/organizations", json=body, headers=auth)

        def post_org(i: int) -> Awaitable[httpx.Response]:
            body = {"name": f"Bench {i}", "kind": "clinic", "timezone": "America/Edmonton"}
            headers = {**auth, "Idempotency-Key": str(uuid.uuid4())}
            return http.post("/v1/organizations", json=body, headers=headers)

        calls: dict[str, Callable[[int], Awaitable[httpx.Response]]] = {
            "GET /healthz (baseline)": lambda i: http.get("/healthz"),
            "GET /v1/me (key lookup)": lambda i: http.get("/v1/me", headers=auth),
            "GET /v1/organizations?limit=50": lambda i: http.get(
                "/v1/organizations?limit=50", headers=auth
            ),
            "POST /v1/organizations + Idempotency-Key": post_org,
        }
        baseline = None
        for name, call in calls.items():
            median = await timed(requests, call)
            baseline = baseline or median
            print(f"{name:45s} {median * 1000:8.2f} ms  x{median / baseline:6.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with scratch_database() as url:
        asyncio.run(run(args.requests, url))


if __name__ == "__main__":
    main()
