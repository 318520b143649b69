"""Test harness: one real PostgreSQL, migrated once by Alembic; every test runs inside an outer
transaction that is rolled back, so tests are independent and order does not matter. (The
tenant-isolation tests share one world instead: each of them runs inside a savepoint of the
world's transaction, rolled back after it; see tests/tenant_isolation/conftest.py.)

The database is a fresh embedded server, or the server named by TEST_DATABASE_URL (whose public
schema is reset first: point it at a database meant for tests).
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
import pytest_asyncio
import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from service.app import create_app
from service.core import encryption, migrate
from service.core.db import make_async_engine, make_session_factory
from service.core.settings import Settings
from service.integrations.webhook_delivery import Deliverer
from tests.support import Api, Headers, bearer
from tests.webhook_receiver import Receiver


def _reset_schema(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A URL of a maintenance database on the test server (for creating scratch databases)."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    from service.core.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(
        Path(tempfile.mkdtemp(prefix="ensemble-test-")) / "pgdata", delete_on_stop=True
    )
    server.start()
    try:
        yield server.url("postgres")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> str:
    if os.environ.get("TEST_DATABASE_URL"):
        url = server_url
    else:
        url = _create_database(server_url, "ensemble_test")
    _reset_schema(url)
    migrate.upgrade(url)
    return url


def _create_database(server_url: str, name: str) -> str:
    from psycopg import sql
    from sqlalchemy.engine import make_url

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def scratch_database(server_url: str) -> Iterator[object]:
    """Factory for throwaway databases (migration tests). Names get this run's own suffix, so
    two suites on one server (CI's and a developer's) never drop each other's."""
    made: list[str] = []
    run = uuid.uuid4().hex[:8]

    def make(name: str) -> str:
        made.append(f"{name}_{run}")
        return _create_database(server_url, made[-1])

    yield make
    from psycopg import sql

    with psycopg.connect(server_url, autocommit=True) as conn:
        for name in made:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    # Stripe stays off unless a test turns it on against the fake on loopback, even when the
    # environment has STRIPE_API_KEY (tests/test_stripe_live.py reads that one itself).
    return Settings(
        database_url=database_url,
        environment="development",
        stripe_api_key=None,
        stripe_webhook_secret=None,
        # The app under test never starts its own scheduler; tests run jobs and workers
        # themselves. Webhook receivers in tests listen on loopback over http.
        scheduler=False,
        webhook_allow_private=True,
        # Limits are tested on their own (tests/test_rate_limits.py) with buckets of their own.
        rate_limits=False,
    )


@pytest_asyncio.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_async_engine(database_url, pool_size=20)
    yield engine
    await engine.dispose()


@pytest_asyncio.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with engine.connect() as conn:
        outer = await conn.begin()
        yield conn
        await outer.rollback()


@pytest_asyncio.fixture
async def db(connection: AsyncConnection) -> AsyncIterator[AsyncSession]:
    """A session inside the test's transaction; its commits only release a savepoint."""
    session = AsyncSession(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    yield session
    await session.close()


AppFor = Callable[[Settings, async_sessionmaker[AsyncSession]], FastAPI]


@pytest.fixture(scope="session")
def app_for(engine: AsyncEngine) -> AppFor:
    """`create_app` for tests: the app for `settings`, with its sessions made by
    `session_factory` (bound to the test's transaction). Apps are made once per distinct
    settings and reused by every later test: a fresh app spends up to 100 ms on its first
    requests (FastAPI builds its routes' dependencies on first use). An app keeps nothing
    between requests but what create_app puts in `app.state`; only the session factory changes
    from test to test."""
    made: list[tuple[Settings, FastAPI]] = []

    def app_for(settings: Settings, session_factory: async_sessionmaker[AsyncSession]) -> FastAPI:
        app = next((app for known, app in made if known == settings), None)
        if app is None:
            app = create_app(settings, engine=engine, session_factory=session_factory)
            made.append((settings.model_copy(deep=True), app))
        # The routers open each request's session from here: sessions join this test's
        # transaction, never an earlier test's (reads too: no autocommit inside a test's).
        app.state.session_factory = session_factory
        app.state.read_session_factory = session_factory
        return app

    return app_for


@pytest_asyncio.fixture
async def client(
    settings: Settings, connection: AsyncConnection, app_for: AppFor
) -> AsyncIterator[httpx.AsyncClient]:
    """The app, driven through HTTP, inside the test's transaction."""
    factory = async_sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    app = app_for(settings, factory)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://ensemble.test") as http:
        yield http


@pytest_asyncio.fixture
async def api(client: httpx.AsyncClient, db: AsyncSession) -> Api:
    """The app, driven through HTTP, with an admin key ready and helpers to mint the others."""
    return await Api.start(client, db)


@dataclass
class LiveServer:
    """The real app under uvicorn on loopback, on a committed database (for concurrency)."""

    url: str
    settings: Settings

    async def admin_key(self) -> Headers:
        from service import bootstrap

        return bearer(await bootstrap.create_key(self.settings, role="admin", name="live admin"))


def _truncate_all(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'alembic_version'"
            )
        ]
        if tables:
            conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")


@pytest_asyncio.fixture
async def committing_factory(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions that really commit (for schedulers and workers, which open their own
    transactions); every table is truncated afterwards."""
    engine = make_async_engine(database_url)
    try:
        yield make_session_factory(engine)
    finally:
        await engine.dispose()
        _truncate_all(database_url)


@contextmanager
def _serving(settings: Settings, database_url: str) -> Iterator[LiveServer]:
    config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
    with serving_config(config, settings, database_url) as server:
        yield server


@contextmanager
def serving_config(
    config: uvicorn.Config, settings: Settings, database_url: str
) -> Iterator[LiveServer]:
    """Serve `config` (its app built from `settings`) on a free loopback port until the block
    ends; then every table is truncated."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("live server did not start")
        time.sleep(0.05)
    try:
        yield LiveServer(url=f"http://127.0.0.1:{port}", settings=settings)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()
        _truncate_all(database_url)


@pytest.fixture
def live_server(settings: Settings, database_url: str) -> Iterator[LiveServer]:
    with _serving(settings, database_url) as server:
        yield server


@pytest.fixture
def contended_server(settings: Settings, database_url: str) -> Iterator[LiveServer]:
    """A live server for races held at a tests/concurrency_support.Gate: a parked request
    waits on the test, so the database deadlines of a request are long enough not to fire
    while the test lines the others up on a slow machine."""
    patient = settings.model_copy(
        update={
            "db_statement_timeout": 120.0,
            "db_lock_timeout": 120.0,
            "db_idle_in_transaction_timeout": 120.0,
            "request_timeout": 120.0,
            "db_pool_size": 40,
            "db_pool_timeout": 60.0,
        }
    )
    with _serving(patient, database_url) as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on loopback that verifies signatures with `standardwebhooks`."""
    started = Receiver().start()
    yield started
    started.stop()


@pytest_asyncio.fixture
async def deliverer(connection: AsyncConnection, settings: Settings) -> AsyncIterator[Deliverer]:
    """The real deliverer inside the test's transaction; retries are due at once (no waits),
    so one `deliver_due()` runs a delivery's whole retry schedule."""
    factory = async_sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    sender = Deliverer(
        factory,
        allow_private=True,
        retry_delays=(timedelta(0),) * 3,
        keyring=encryption.keyring(settings),
    )
    yield sender
    await sender.aclose()
