"""The database goes away and comes back: with a TCP proxy of the test's own between the app
and PostgreSQL, switched between forward, refuse and blackhole, every request answers within
its deadline with 503 problem+json and Retry-After (never a 500, never a hang), /readyz says
so and /healthz stays up, nothing half-written is left, and the same process answers 200
again once the database is back."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import psycopg
import pytest_asyncio

from service import bootstrap
from service.app import create_app
from service.core.settings import Settings
from tests.db_proxy import DatabaseProxy
from tests.support import forget_committed

# Small deadlines keep the test short; the bound asserted is the issue's: 10 s.
DEADLINES = {
    "db_connect_timeout": 1,
    "db_pool_timeout": 1.0,
    "db_statement_timeout": 2.0,
    "request_timeout": 4.0,
}
ANSWER_WITHIN = 10.0


@dataclass
class Faulty:
    proxy: DatabaseProxy
    http: httpx.AsyncClient
    admin: dict[str, str]
    tag: str


@pytest_asyncio.fixture
async def faulty(settings: Settings, database_url: str) -> AsyncIterator[Faulty]:
    proxy = await DatabaseProxy(database_url).start()
    tag = uuid.uuid4().hex[:8]
    key = await bootstrap.create_key(settings, role="admin", name=f"faults {tag}")
    app = create_app(
        settings.model_copy(update={"database_url": proxy.url(), "scheduler": False, **DEADLINES})
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://ensemble.test") as http:
            yield Faulty(proxy, http, {"Authorization": f"Bearer {key}"}, tag)
    await proxy.stop()
    forget_committed(database_url, key_names=[f"faults {tag}"], org_prefix=f"Faults {tag}")


async def _timed(call: asyncio.Future | object) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await call  # type: ignore[misc]
    return response, time.monotonic() - started


def _unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "1"  # ServiceUnavailable.retry_after
    assert response.json()["status"] == 503


async def _until_ok(faulty: Faulty) -> list[int]:
    """Statuses seen until /v1/me answers 200 again (at most ANSWER_WITHIN seconds)."""
    seen: list[int] = []
    deadline = time.monotonic() + ANSWER_WITHIN
    while time.monotonic() < deadline:
        response = await faulty.http.get("/v1/me", headers=faulty.admin)
        seen.append(response.status_code)
        if response.status_code == 200:
            return seen
        await asyncio.sleep(0.2)
    return seen


async def _organizations_named(database_url: str, name: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM organizations WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return int(row[0])


async def test_a_refusing_database_answers_503_and_the_same_process_recovers(
    faulty: Faulty, database_url: str
):
    assert (await faulty.http.get("/v1/me", headers=faulty.admin)).status_code == 200

    faulty.proxy.set("refuse")
    me, took = await _timed(faulty.http.get("/v1/me", headers=faulty.admin))
    _unavailable(me)
    assert took < ANSWER_WITHIN
    name = f"Faults {faulty.tag} refused"
    created, took = await _timed(
        faulty.http.post(
            "/v1/organizations",
            json={"name": name, "kind": "school", "timezone": "America/Edmonton"},
            headers=faulty.admin,
        )
    )
    _unavailable(created)
    assert took < ANSWER_WITHIN
    ready = await faulty.http.get("/readyz")
    assert ready.status_code == 503
    assert (await faulty.http.get("/healthz")).status_code == 200

    faulty.proxy.set("forward")
    seen = await _until_ok(faulty)
    assert seen[-1] == 200 and set(seen) <= {200, 503}, seen
    assert (await faulty.http.get("/readyz")).status_code == 200
    assert await _organizations_named(database_url, name) == 0


async def test_a_silent_database_answers_503_within_the_bound_and_leaves_nothing(
    faulty: Faulty, database_url: str
):
    assert (await faulty.http.get("/v1/me", headers=faulty.admin)).status_code == 200

    faulty.proxy.set("blackhole")
    name = f"Faults {faulty.tag} silent"
    results = await asyncio.gather(
        _timed(faulty.http.get("/v1/me", headers=faulty.admin)),
        _timed(
            faulty.http.post(
                "/v1/organizations",
                json={"name": name, "kind": "school", "timezone": "America/Edmonton"},
                headers=faulty.admin,
            )
        ),
        _timed(faulty.http.get("/readyz")),
    )
    (me, me_took), (created, created_took), (ready, ready_took) = results
    _unavailable(me)
    _unavailable(created)
    assert ready.status_code == 503
    assert max(me_took, created_took, ready_took) < ANSWER_WITHIN
    assert (await faulty.http.get("/healthz")).status_code == 200

    faulty.proxy.set("forward")
    seen = await _until_ok(faulty)
    assert seen[-1] == 200 and set(seen) <= {200, 503}, seen
    assert await _organizations_named(database_url, name) == 0


async def test_a_write_waiting_on_a_locked_row_gets_503_at_the_lock_deadline(
    faulty: Faulty, database_url: str
):
    name = f"Faults {faulty.tag} locked"
    created = await faulty.http.post(
        "/v1/organizations",
        json={"name": name, "kind": "school", "timezone": "America/Edmonton"},
        headers=faulty.admin,
    )
    assert created.status_code == 201
    org_id = created.json()["id"]
    with psycopg.connect(database_url) as holder:
        holder.execute("SELECT 1 FROM organizations WHERE id = %s FOR UPDATE", (org_id,))
        # The app's lock_timeout (2 s by default) ends the wait: 503, nothing changed.
        patched, took = await _timed(
            faulty.http.patch(
                f"/v1/organizations/{org_id}",
                json={"address": "elsewhere"},
                headers=faulty.admin,
            )
        )
        blocked = holder.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        ).fetchone()
        holder.rollback()
    _unavailable(patched)
    assert patched.json()["type"].endswith("/database-unavailable")
    assert took < ANSWER_WITHIN
    assert blocked == (0,)  # the waiter gave up; nobody is left waiting on the lock
    after = await faulty.http.get(f"/v1/organizations/{org_id}", headers=faulty.admin)
    assert after.json()["address"] is None


async def test_no_free_pooled_connection_is_503_after_the_pool_deadline(
    settings: Settings, database_url: str
):
    from sqlalchemy.ext.asyncio import AsyncEngine

    app = create_app(
        settings.model_copy(update={"scheduler": False, "db_pool_size": 1, "db_pool_timeout": 0.5})
    )
    key = await bootstrap.create_key(settings, role="admin", name="faults pool")
    try:
        async with app.router.lifespan_context(app):
            engine: AsyncEngine = app.state.engine
            # Both pooled connections (pool 1 + overflow 1) are held elsewhere.
            held = [await engine.connect() for _ in range(2)]
            for conn in held:
                await conn.exec_driver_sql("SELECT 1")
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                me, took = await _timed(
                    http.get("/v1/me", headers={"Authorization": f"Bearer {key}"})
                )
            for conn in held:
                await conn.close()
        _unavailable(me)
        assert took < ANSWER_WITHIN
    finally:
        forget_committed(database_url, key_names=["faults pool"])
