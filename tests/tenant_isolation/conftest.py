"""One world per test module, each test in a savepoint that is rolled back.

The world (world.py, about 70 requests) is built once per module, inside a transaction of the
module's own connection that is rolled back after the module's last test. Each test runs inside
a savepoint of that transaction, rolled back after it: whatever a test changes (a key revoked, a
feed rotated, an invoice voided, the admin walk deleting what it walks) is gone before the next
test starts. The app under test is made per test, as in the rest of the suite, with its session
factory bound to the module's connection; its sessions join with savepoints of their own, so
their commits release those and never the test's.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker

from service.app import create_app
from service.core.settings import Settings
from tests.support import Api
from tests.tenant_isolation.world import World, build_world, walk_settings


@pytest.fixture(scope="module")
def settings(database_url: str) -> Settings:
    """Overrides the suite's: see `walk_settings`."""
    return walk_settings(database_url)


@pytest_asyncio.fixture(scope="module")
async def module_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """The module's connection, in a transaction that holds its world (never committed)."""
    async with engine.connect() as conn:
        outer = await conn.begin()
        yield conn
        await outer.rollback()


@pytest_asyncio.fixture
async def connection(module_connection: AsyncConnection) -> AsyncIterator[AsyncConnection]:
    """Overrides the suite's: the test's transaction is a savepoint in the module's, so the
    app (the `client` fixture) and the test see the world, and the test's changes go away."""
    savepoint = await module_connection.begin_nested()
    yield module_connection
    # Only this fixture may end the savepoint: had anything else, the test's changes could
    # have reached the world the next tests see.
    assert savepoint.is_active, "the test's savepoint was ended by someone else"
    await savepoint.rollback()


@pytest_asyncio.fixture(scope="module")
async def module_world(
    settings: Settings, engine: AsyncEngine, module_connection: AsyncConnection
) -> World:
    """The world, built once for the module with an app of its own (outside any test's
    savepoint). Tests get it through `world`, with the test's own app."""
    factory = async_sessionmaker(
        bind=module_connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    app = create_app(settings, engine=engine, session_factory=factory)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://ensemble.test") as http:
        async with factory() as db:
            api = await Api.start(http, db)
        return await build_world(api)


@pytest.fixture
def world(module_world: World, client: httpx.AsyncClient) -> World:
    """The module's world, driven through this test's app (`client`, inside the test's
    savepoint), as a deep copy: a test that edits what it was given edits only its copy."""
    api = Api(client=client, admin=module_world.api.admin)
    return copy.deepcopy(module_world, memo={id(module_world.api): api})
