"""Clinical notes, everywhere else: the world's planted note (NOTE_MARKER, recorded by T1 on a
session of org A) is in no row of any table as text, no webhook event, no calendar feed, no
CSV export and no log line, while every route is walked by the admin and by T1 (the two who may
read it) and by org A's coordinator. The walk itself (test_walk.py) checks every answer."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests.support import ok
from tests.tenant_isolation.walk import (
    app_of,
    coordinator_of_a,
    deletions_last,
    operations,
    provider_staff,
    requests_for,
    send,
    therapist_1,
)
from tests.tenant_isolation.world import NOTE_MARKER, OBSERVATION_PATH, World
from tests.test_observations import tables_containing


async def test_the_planted_note_is_readable_by_its_therapist_and_nowhere_in_the_database(
    world: World, db: AsyncSession
) -> None:
    path = OBSERVATION_PATH.format(session_id=world.observed_session["id"])
    read = ok(await world.api.client.get(path, headers=world.therapist_1_key))
    assert read["note"] == NOTE_MARKER
    assert await tables_containing(db, NOTE_MARKER) == []
    assert await tables_containing(db, "WALK-NOTE-MARKER") == []
    # The search does find what is there in the clear (it is not blind).
    assert await tables_containing(db, world.therapist_1["name"]) != []


async def test_calendar_feeds_and_the_invoice_export_never_carry_a_note(world: World) -> None:
    client = world.api.client
    for feed in (world.feed_therapist_1, world.feed_org_a):
        calendar = await client.get(feed["url"].removeprefix("http://127.0.0.1:8000"))
        assert calendar.status_code == 200, calendar.text
        assert world.observed_program["title"] in calendar.text  # the session is in it
        assert "WALK-NOTE-MARKER" not in calendar.text
    export = await client.get(
        "/v1/invoices/export.csv",
        params={"from": "2000-01-01", "to": "2199-12-31"},
        headers=world.api.admin,
    )
    assert export.status_code in (200, 422), export.text
    assert "WALK-NOTE-MARKER" not in export.text


@pytest.mark.parametrize(
    "make_walker",
    [lambda w: provider_staff(w, "admin"), therapist_1, coordinator_of_a],
    ids=["admin", "therapist", "coordinator"],
)
async def test_walking_every_route_logs_no_note(
    world: World, make_walker, caplog: pytest.LogCaptureFixture
) -> None:
    walker = make_walker(world)
    walker = walker.at_home() if walker.own_ids else walker
    client = world.api.client
    with caplog.at_level(logging.DEBUG):
        for operation in deletions_last(operations(app_of(client))):
            for request in requests_for(operation, walker):
                await send(client, request, walker.headers)
    assert caplog.records  # the capture saw the app's logging at all
    assert "WALK-NOTE-MARKER" not in caplog.text
    for record in caplog.records:
        assert "WALK-NOTE-MARKER" not in repr(record.args)
