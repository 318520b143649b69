"""One source of time zone rules: local dates and times come from the pinned tzdata package
everywhere, SQL included, whatever the database server's own copy of the rules says.

Alberta stays on UTC-6 from November 2026 in tzdata 2026f; a server with older rules (Debian's
PostgreSQL 15 here) still puts America/Edmonton on UTC-7 in winter, one hour off. A session at
00:30 local time is where the two disagree about the day: every view of it must say the day
Python says."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from tests.billing_support import complete, run
from tests.programs_support import confirmed_program, sessions_of
from tests.support import Api, ok

EDMONTON = ZoneInfo("America/Edmonton")


def _a_winter_day_past() -> date:
    """A day at least three days ago and inside a winter after November 2026 (Python's
    tzdata: UTC-6), so that the server's older rules would say UTC-7."""
    day = datetime.now(UTC).astimezone(EDMONTON).date() - timedelta(days=3)
    while day.month not in (11, 12, 1, 2) or day < date(2026, 11, 2):
        day -= timedelta(days=1)
    return day


async def test_a_half_past_midnight_session_keeps_its_day_in_every_view(api: Api, db: AsyncSession):
    day = _a_winter_day_past()
    starts = datetime.combine(day, datetime.min.time(), EDMONTON) + timedelta(minutes=30)
    assert starts.utcoffset() == timedelta(hours=-6)  # Python's (tzdata's) rules
    org = await api.make_org(timezone="America/Edmonton", holiday_region=None)
    offering, therapist = await api.make_offering(), await api.make_therapist()
    program = await confirmed_program(
        api,
        org,
        offering,
        therapist,
        schedule={"start_date": str(day), "start_time": "00:30", "rrule": "FREQ=DAILY;COUNT=1"},
    )
    [session] = await sessions_of(api, program["id"])
    assert session["starts_at"] == starts.astimezone(UTC).isoformat().replace("+00:00", "Z")

    # The calendar, by local date.
    listed = await sessions_of(api, program["id"], **{"from": str(day), "to": str(day)})
    assert [s["id"] for s in listed] == [session["id"]]
    assert (
        await sessions_of(
            api,
            program["id"],
            **{"from": str(day - timedelta(days=1)), "to": str(day - timedelta(days=1))},
        )
        == []
    )

    # Billing: a run for that one day bills it, and its line carries that day and time.
    await complete(api, session)
    [draft] = await run(api, str(day), str(day), organization_id=org["id"])
    invoice = ok(await api.client.get(f"/v1/invoices/{draft['id']}", headers=api.admin))
    [line] = invoice["lines"]
    assert line["description"].endswith(f", {day} 00:30")

    # The export shows the session's local date.
    ok(await api.client.post(f"/v1/invoices/{draft['id']}/issue", headers=api.admin))
    today = datetime.now(UTC).astimezone(ZoneInfo("America/Edmonton")).date()
    response = await api.client.get(
        "/v1/invoices/export.csv",
        params={"from": str(today - timedelta(days=1)), "to": str(today + timedelta(days=1))},
        headers=api.admin,
    )
    rows = [
        r for r in csv.DictReader(io.StringIO(response.text)) if r["session_id"] == session["id"]
    ]
    assert [r["session_date"] for r in rows] == [str(day)]


async def test_the_weekly_load_counts_a_monday_half_past_midnight_in_its_own_week(api: Api):
    """Monday 00:30 belongs to Monday's week in the therapist's zone; by older rules it would
    be Sunday 23:30 of the week before and the limit would be judged on the wrong week."""
    today = datetime.now(UTC).astimezone(EDMONTON).date()
    monday = today + timedelta(days=7 - today.weekday() + 7)
    while monday.month not in (11, 12, 1, 2):
        monday += timedelta(days=7)
    org = await api.make_org(timezone="America/Edmonton", holiday_region=None)
    offering = await api.make_offering(duration_minutes=60)
    therapist = await api.make_therapist(max_weekly_minutes=60)
    # Monday 00:30-01:30 fills the therapist's week of `monday`.
    await confirmed_program(
        api,
        org,
        offering,
        therapist,
        schedule={"start_date": str(monday), "start_time": "00:30", "rrule": "FREQ=DAILY;COUNT=1"},
    )
    # A Sunday session the day before is in the previous week: it fits.
    sunday = monday - timedelta(days=1)
    await confirmed_program(
        api,
        org,
        offering,
        therapist,
        schedule={"start_date": str(sunday), "start_time": "12:00", "rrule": "FREQ=DAILY;COUNT=1"},
    )
    # A Tuesday session is in Monday's week: over the limit.
    other = await api.client.post(
        "/v1/programs",
        json={
            "organization_id": org["id"],
            "offering_id": offering["id"],
            "title": "Too much",
            "modality": "online",
            "video_url": "https://meet.example.org/x",
            "participants": 1,
            "schedule": {
                "timezone": "America/Edmonton",
                "start_date": str(monday + timedelta(days=1)),
                "start_time": "12:00",
                "rrule": "FREQ=DAILY;COUNT=1",
            },
        },
        headers=api.admin,
    )
    refused = await api.client.post(
        f"/v1/programs/{ok(other, 201)['id']}/assign",
        json={"therapist_id": therapist["id"]},
        headers=api.admin,
    )
    assert refused.status_code == 409
    [conflict] = refused.json()["conflicts"]
    assert (conflict["reason"], conflict["week_start"], conflict["week_minutes"]) == (
        "weekly_load",
        str(monday),
        120,
    )
