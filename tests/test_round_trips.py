"""What a request costs the database in round trips, on an app with its own engine (not a
test's transaction): a read sends its statements alone (autocommit: no BEGIN before, no COMMIT
after), a change runs in one transaction, and a busy pooled connection is not pinged before
each use while a rested one is (so a database restarted while the API was idle costs no
request an error)."""

from __future__ import annotations

import gc
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest_asyncio
from fastapi import FastAPI
from psycopg.pq import TransactionStatus
from sqlalchemy import event

from service import bootstrap
from service.app import create_app
from service.core import db as core_db
from service.core.settings import Settings
from tests.support import forget_committed


@dataclass
class Seen:
    """Each statement the app sent, with the connection's transaction state after it."""

    statements: list[tuple[str, str]] = field(default_factory=list)
    backends: list[int] = field(default_factory=list)

    def clear(self) -> None:
        self.statements.clear()

    def texts(self) -> list[str]:
        return [text for text, _ in self.statements]

    def states(self) -> set[str]:
        return {state for _, state in self.statements}


@dataclass
class Served:
    http: httpx.AsyncClient
    admin: dict[str, str]
    seen: Seen
    tag: str
    app: FastAPI


@pytest_asyncio.fixture
async def served(settings: Settings, database_url: str) -> AsyncIterator[Served]:
    tag = uuid.uuid4().hex[:8]
    key = await bootstrap.create_key(settings, role="admin", name=f"round trips {tag}")
    app = create_app(settings.model_copy(update={"scheduler": False}))
    seen = Seen()
    async with app.router.lifespan_context(app):

        def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            info = conn.connection.dbapi_connection.driver_connection.info
            state = TransactionStatus(info.transaction_status).name
            seen.statements.append((statement.split()[0].upper(), state))
            seen.backends.append(info.backend_pid)

        event.listen(app.state.engine.sync_engine, "after_cursor_execute", after)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ensemble.test") as http:
            yield Served(http, {"Authorization": f"Bearer {key}"}, seen, tag, app)
    forget_committed(database_url, key_names=[f"round trips {tag}"], org_prefix=f"Trips {tag}")


async def test_a_read_sends_its_statements_alone(served: Served):
    await served.http.get("/v1/me", headers=served.admin)  # the pool's first connection
    served.seen.clear()

    me = await served.http.get("/v1/me", headers=served.admin)
    listed = await served.http.get("/v1/organizations?limit=5", headers=served.admin)

    assert (me.status_code, listed.status_code) == (200, 200)
    # The key for /v1/me; the key and the page for the list: nothing else, no ping, and no
    # transaction left open after any of them.
    assert served.seen.texts() == ["SELECT", "SELECT", "SELECT"]
    assert served.seen.states() == {"IDLE"}


async def test_a_change_runs_in_one_transaction(served: Served):
    await served.http.get("/v1/me", headers=served.admin)
    served.seen.clear()

    created = await served.http.post(
        "/v1/organizations",
        json={"name": f"Trips {served.tag}", "kind": "school", "timezone": "America/Edmonton"},
        headers=served.admin,
    )

    assert created.status_code == 201, created.text
    # Every statement of the change, the key lookup included, ran inside the transaction
    # that the unit of work commits after them.
    assert "INSERT" in served.seen.texts()
    assert served.seen.states() == {"INTRANS"}


def _terminate(database_url: str, backend: int) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (backend,))


async def test_a_connection_killed_while_resting_is_replaced_before_use(
    served: Served, database_url: str, monkeypatch
):
    await served.http.get("/v1/me", headers=served.admin)
    _terminate(database_url, served.seen.backends[-1])
    # The connection has rested (the threshold is lowered to make that immediate): the
    # checkout pings it, finds it dead and connects anew, so the request never sees it.
    monkeypatch.setattr(core_db, "PING_WHEN_IDLE_FOR", 0.0)

    me = await served.http.get("/v1/me", headers=served.admin)

    assert me.status_code == 200, me.text
    assert served.seen.backends[-1] != served.seen.backends[0]


async def test_a_connection_killed_while_busy_costs_one_request_a_503(
    served: Served, database_url: str, monkeypatch
):
    await served.http.get("/v1/me", headers=served.admin)
    _terminate(database_url, served.seen.backends[-1])
    # A busy connection is not pinged (that round trip is what reads no longer pay): the
    # request that finds it dead is refused as the database's fault, and the pool is renewed.
    monkeypatch.setattr(core_db, "PING_WHEN_IDLE_FOR", 3600.0)

    refused = await served.http.get("/v1/me", headers=served.admin)
    again = await served.http.get("/v1/me", headers=served.admin)

    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "1"
    assert again.status_code == 200, again.text


async def test_what_startup_built_is_left_out_of_full_garbage_collections(served: Served):
    """The app, its routes and its pool live as long as the process: a full collection under
    load must not walk them (it stopped every request in flight for 100 ms; docs/performance.md)."""
    await served.http.get("/v1/me", headers=served.admin)
    made_since = [served.tag]
    walked = {id(tracked) for tracked in gc.get_objects()}  # generations 0-2, not the frozen
    assert id(made_since) in walked
    assert id(served.app.router.routes) not in walked
    assert id(served.app.state.engine.sync_engine.pool) not in walked
    assert gc.get_freeze_count() > len(served.app.router.routes)
