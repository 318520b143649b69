"""One world for the package's modules, each test in a savepoint that is rolled back.

The world (world.py, about 70 requests) is built once, on first use, inside a transaction of a
connection of the package's own that is rolled back after the package's last test. Each test
runs inside a savepoint of that transaction, rolled back after it: whatever a test changes (a
key revoked, a feed rotated, an invoice voided, the admin walk deleting what it walks) is gone
before the next test starts. The app under test (`client`) has its session factory bound to the
package's connection; its sessions join with savepoints of their own, so their commits release
those and never the test's.

The scope is the package, not the session: the open transaction holds locks on the tables the
world wrote to, and the suite's live-server tests truncate every table once they are done.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker

from service.core.settings import Settings
from tests.conftest import AppFor
from tests.support import Api
from tests.tenant_isolation.world import World, build_world, walk_settings


@pytest.fixture(scope="package")
def settings(database_url: str) -> Settings:
    """Overrides the suite's: see `walk_settings`."""
    return walk_settings(database_url)


@pytest_asyncio.fixture(scope="package")
async def world_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """The package's connection, in a transaction that holds the world (never committed)."""
    async with engine.connect() as conn:
        outer = await conn.begin()
        yield conn
        await outer.rollback()


@pytest_asyncio.fixture
async def connection(world_connection: AsyncConnection) -> AsyncIterator[AsyncConnection]:
    """Overrides the suite's: the test's transaction is a savepoint in the world's, so the app
    (the `client` fixture) and the test see the world, and the test's changes go away."""
    savepoint = await world_connection.begin_nested()
    yield world_connection
    # Only this fixture may end the savepoint: had anything else, the test's changes could
    # have reached the world the next tests see.
    assert savepoint.is_active, "the test's savepoint was ended by someone else"
    await savepoint.rollback()


@pytest_asyncio.fixture(scope="package")
async def built_world(
    settings: Settings, world_connection: AsyncConnection, app_for: AppFor
) -> World:
    """The world, built once for the package (outside any test's savepoint). Tests get it
    through `world`, with their own client."""
    factory = async_sessionmaker(
        bind=world_connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    transport = httpx.ASGITransport(app=app_for(settings, factory), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://ensemble.test") as http:
        async with factory() as db:
            api = await Api.start(http, db)
        return await build_world(api)


@pytest.fixture
def world(built_world: World, client: httpx.AsyncClient) -> World:
    """The world, driven through this test's client (inside the test's savepoint), as a deep
    copy: a test that edits what it was given edits only its copy."""
    api = Api(client=client, admin=built_world.api.admin)
    return copy.deepcopy(built_world, memo={id(built_world.api): api})
