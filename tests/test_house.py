"""The house rules a newcomer relies on: every route runs in the unit of work without opting
in, and each app keeps its own settings (two apps with different settings in one process)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import psycopg
import pytest_asyncio
from fastapi import APIRouter, FastAPI, status
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker

from models.organizations import Organization, OrganizationCreate, OrganizationRead
from models.types import OrganizationKind
from routers.deps import CurrentPrincipal, DbSession
from service.app import ROUTERS, create_app
from service.catalog import organizations
from service.core.clock import local_today
from service.core.errors import InvalidState
from service.core.settings import Settings
from tests.programs_support import make_program, sessions_of
from tests.support import Api, forget_committed, ok

# A router as a newcomer would write it: a plain APIRouter, no route class, no commit.
plain = APIRouter(prefix="/v1/house-test")


@plain.post("/organizations", status_code=status.HTTP_201_CREATED)
async def create_then_answer(
    name: str, db: DbSession, principal: CurrentPrincipal
) -> OrganizationRead:
    return await organizations.create(db, principal, _org(name))


@plain.post("/organizations-then-fail")
async def create_then_refuse(name: str, db: DbSession, principal: CurrentPrincipal) -> None:
    await organizations.create(db, principal, _org(name))
    raise InvalidState("refused after writing")


@plain.get("/organizations-on-read")
async def add_on_read(name: str, db: DbSession, fail: bool = False) -> dict[str, str]:
    # What a read adds to its session, as a read's audit row is: never flushed by the route.
    db.add(Organization(name=name, kind=OrganizationKind.school, timezone="America/Edmonton"))
    if fail:
        raise InvalidState("refused after adding")
    return {"added": name}


def _org(name: str) -> OrganizationCreate:
    return OrganizationCreate(name=name, kind=OrganizationKind.school, timezone="America/Edmonton")


def _committed_names(database_url: str, prefix: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT name FROM organizations WHERE name LIKE %s ORDER BY name", (prefix + "%",)
        ).fetchall()
    return [row[0] for row in rows]


@pytest_asyncio.fixture
async def committing_app(
    settings: Settings, engine: AsyncEngine, database_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """The app with the plain router, on a committing session factory (no test transaction):
    what it commits is visible to any other connection. Cleans up what it made."""
    app = create_app(settings, engine=engine, routers=[*ROUTERS, plain])
    prefix = f"House {uuid.uuid4().hex[:8]} "
    from service import bootstrap

    key = await bootstrap.create_key(settings, role="admin", name=prefix + "admin")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://ensemble.test",
        headers={"Authorization": f"Bearer {key}"},
    ) as client:
        yield client, prefix
    forget_committed(database_url, key_names=[prefix + "admin"], org_prefix=prefix)


async def test_a_new_router_without_any_opt_in_commits_its_write_before_answering(
    committing_app: tuple[httpx.AsyncClient, str], database_url: str
):
    client, prefix = committing_app
    response = await client.post("/v1/house-test/organizations", params={"name": prefix + "A"})
    assert response.status_code == 201
    assert _committed_names(database_url, prefix) == [prefix + "A"]


async def test_a_new_router_that_refuses_after_writing_leaves_nothing_behind(
    committing_app: tuple[httpx.AsyncClient, str], database_url: str
):
    client, prefix = committing_app
    response = await client.post(
        "/v1/house-test/organizations-then-fail", params={"name": prefix + "B"}
    )
    assert response.status_code == 409
    assert response.json()["detail"] == "refused after writing"
    assert _committed_names(database_url, prefix) == []


async def test_what_a_read_adds_to_its_session_is_written_only_when_it_answers_below_400(
    committing_app: tuple[httpx.AsyncClient, str], database_url: str
):
    # Reads run in autocommit sessions, and a read that added nothing skips the commit: one
    # that added something must still have it committed, and only when it succeeds.
    client, prefix = committing_app
    kept = await client.get("/v1/house-test/organizations-on-read", params={"name": prefix + "C"})
    refused = await client.get(
        "/v1/house-test/organizations-on-read", params={"name": prefix + "D", "fail": "true"}
    )
    assert (kept.status_code, refused.status_code) == (200, 409)
    assert _committed_names(database_url, prefix) == [prefix + "C"]


def _app_with(
    settings: Settings, engine: AsyncEngine, connection: AsyncConnection, **changes: object
) -> FastAPI:
    factory = async_sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    return create_app(settings.model_copy(update=changes), engine=engine, session_factory=factory)


async def test_two_apps_in_one_process_each_plan_to_their_own_horizon(
    api: Api, settings: Settings, engine: AsyncEngine, connection: AsyncConnection
):
    org, offering = await api.make_org(), await api.make_offering()
    start = local_today("America/Edmonton") + timedelta(days=1)
    weekday = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")[start.weekday()]
    counts = []
    for weeks in (2, 6):
        therapist = await api.make_therapist()
        app = _app_with(settings, engine, connection, horizon_weeks=weeks)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ensemble.test") as http:
            own = Api(client=http, admin=api.admin)
            program = await make_program(
                own,
                org,
                offering,
                schedule={"start_date": start.isoformat(), "rrule": f"FREQ=WEEKLY;BYDAY={weekday}"},
            )
            path = f"/v1/programs/{program['id']}"
            ok(
                await http.post(
                    f"{path}/assign", json={"therapist_id": therapist["id"]}, headers=api.admin
                )
            )
            ok(await http.post(f"{path}/confirm", headers=api.admin))
            counts.append(len(await sessions_of(own, program["id"])))
    # Weekly from tomorrow: the first session and one a week up to the horizon, inclusive.
    assert counts == [3, 7]
