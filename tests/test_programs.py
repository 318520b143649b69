"""Booking, staffing and confirming programs; sessions appear on the calendar."""

from __future__ import annotations

from datetime import date, timedelta

from tests.programs_support import (
    FIRST_TUESDAY,
    confirmed_program,
    make_program,
    sessions_of,
    utc_text,
    weekly,
)
from tests.support import Api, invalid_fields, ok, problem


def _next_after_a_month(candidates: list[date]) -> date:
    soon = FIRST_TUESDAY  # four weeks or more from today
    return min(d for d in candidates if d >= soon)


def next_dst_start_sunday() -> date:
    """The next second Sunday of March (US summer time begins) at least four weeks away."""
    sundays = []
    for year in (FIRST_TUESDAY.year, FIRST_TUESDAY.year + 1):
        march = date(year, 3, 1)
        first_sunday = march + timedelta(days=(6 - march.weekday()) % 7)
        sundays.append(first_sunday + timedelta(weeks=1))
    return _next_after_a_month(sundays)


def next_family_day() -> date:
    """The next third Monday of February (Alberta's Family Day) at least four weeks away."""
    mondays = []
    for year in (FIRST_TUESDAY.year, FIRST_TUESDAY.year + 1):
        february = date(year, 2, 1)
        first_monday = february + timedelta(days=(0 - february.weekday()) % 7)
        mondays.append(first_monday + timedelta(weeks=2))
    return _next_after_a_month(mondays)


async def test_a_confirmed_weekly_program_puts_its_sessions_on_the_calendar(api: Api):
    org = await api.make_org(timezone="America/Edmonton")
    offering = await api.make_offering(format="individual", max_participants=1, rate_cents=12000)
    therapist = await api.make_therapist()
    program = await confirmed_program(api, org, offering, therapist)
    assert program["status"] == "confirmed"
    assert program["rate_cents"] == 12000
    sessions = await sessions_of(api, program["id"])
    assert [s["starts_at"] for s in sessions] == weekly(FIRST_TUESDAY, "10:00", 4)
    assert {s["timezone"] for s in sessions} == {"America/Edmonton"}
    assert {s["therapist_id"] for s in sessions} == {therapist["id"]}


async def test_a_coordinator_books_for_their_own_organization_at_the_offerings_rate(api: Api):
    org = await api.make_org()
    offering = await api.make_offering(rate_cents=22000, max_participants=12)
    coordinator = await api.coordinator(org["id"])
    program = await make_program(
        api,
        org,
        offering,
        headers=coordinator,
        participants=8,
        schedule={"start_date": str(FIRST_TUESDAY)},
    )
    assert (program["status"], program["rate_cents"], program["therapist_id"]) == (
        "requested",
        22000,
        None,
    )
    assert program["schedule"]["duration_minutes"] == offering["duration_minutes"]
    events = ok(
        await api.client.get(f"/v1/audit-events?entity_id={program['id']}", headers=api.admin)
    )["data"]
    assert [e["action"] for e in events] == ["program.requested"]


async def test_a_coordinator_naming_another_organization_never_gets_a_program(api: Api):
    mine, theirs = await api.make_org(), await api.make_org()
    offering = await api.make_offering()
    coordinator = await api.coordinator(mine["id"])
    body = {
        "organization_id": theirs["id"],
        "offering_id": offering["id"],
        "title": "x",
        "modality": "online",
        "video_url": "https://meet.example.org/x",
        "participants": 1,
        "schedule": {
            "timezone": "America/Edmonton",
            "start_date": str(FIRST_TUESDAY),
            "start_time": "10:00",
            "rrule": "FREQ=WEEKLY;COUNT=2",
        },
    }
    problem(await api.client.post("/v1/programs", json=body, headers=coordinator), 404)
    listed = ok(
        await api.client.get(f"/v1/programs?organization_id={theirs['id']}", headers=api.admin)
    )
    assert listed["data"] == []


async def test_a_coordinator_cannot_book_in_the_past_but_an_admin_can_record_one(api: Api):
    org = await api.make_org()
    offering = await api.make_offering()
    coordinator = await api.coordinator(org["id"])
    past = {"start_date": "2024-09-03"}
    response = await api.client.post(
        "/v1/programs",
        headers=coordinator,
        json={
            "organization_id": org["id"],
            "offering_id": offering["id"],
            "title": "Late",
            "modality": "online",
            "video_url": "https://meet.example.org/x",
            "participants": 1,
            "schedule": {
                "timezone": "America/Edmonton",
                "start_time": "10:00",
                "rrule": "FREQ=WEEKLY;COUNT=2",
                **past,
            },
        },
    )
    assert invalid_fields(response) == ["schedule.start_date"]
    recorded = await make_program(api, org, offering, schedule=past)
    assert recorded["schedule"]["start_date"] == "2024-09-03"


async def test_a_booking_with_many_problems_names_each_field_and_writes_nothing(api: Api):
    org = await api.make_org()
    other = await api.make_org()
    foreign_room = await api.make_location(other["id"])
    solo = await api.make_offering(format="individual", max_participants=1)
    response = await api.client.post(
        "/v1/programs",
        headers=api.admin,
        json={
            "organization_id": org["id"],
            "offering_id": solo["id"],
            "title": "Too much",
            "modality": "in_person",
            "location_id": foreign_room["id"],
            "participants": 3,
            "schedule": {
                "timezone": "America/Edmonton",
                "start_date": str(FIRST_TUESDAY),
                "start_time": "10:00",
                "rrule": "FREQ=HOURLY;COUNT=2",
            },
        },
    )
    assert sorted(invalid_fields(response)) == ["location_id", "participants", "schedule.rrule"]
    listed = ok(
        await api.client.get(f"/v1/programs?organization_id={org['id']}", headers=api.admin)
    )
    assert listed["data"] == []


async def test_online_programs_need_an_https_link(api: Api):
    org = await api.make_org()
    offering = await api.make_offering()
    for video_url in (None, "http://meet.example.org/x"):
        response = await api.client.post(
            "/v1/programs",
            headers=api.admin,
            json={
                "organization_id": org["id"],
                "offering_id": offering["id"],
                "title": "x",
                "modality": "online",
                "video_url": video_url,
                "participants": 1,
                "schedule": {
                    "timezone": "America/Edmonton",
                    "start_date": str(FIRST_TUESDAY),
                    "start_time": "10:00",
                    "rrule": "FREQ=WEEKLY;COUNT=2",
                },
            },
        )
        assert invalid_fields(response) == ["video_url"]


async def test_a_schedule_beyond_the_supported_rules_is_refused(api: Api):
    org = await api.make_org()
    offering = await api.make_offering()
    for rrule in (
        "FREQ=WEEKLY;COUNT=501",
        # UNTIL more than two calendar years after the start; COUNT and UNTIL together.
        f"FREQ=WEEKLY;UNTIL={FIRST_TUESDAY.year + 3}0101",
        "FREQ=YEARLY;COUNT=2",
        f"FREQ=WEEKLY;COUNT=2;UNTIL={(FIRST_TUESDAY + timedelta(weeks=8)):%Y%m%d}",
        "BYDAY=MO",
        "FREQ=WEEKLY;BYHOUR=9",
    ):
        response = await api.client.post(
            "/v1/programs",
            headers=api.admin,
            json={
                "organization_id": org["id"],
                "offering_id": offering["id"],
                "title": "x",
                "modality": "online",
                "video_url": "https://meet.example.org/x",
                "participants": 1,
                "schedule": {
                    "timezone": "America/Edmonton",
                    "start_date": str(FIRST_TUESDAY),
                    "start_time": "10:00",
                    "rrule": rrule,
                },
            },
        )
        assert invalid_fields(response) == ["schedule.rrule"], rrule


async def test_confirming_needs_a_therapist_and_happens_once(api: Api):
    org, offering, therapist = (
        await api.make_org(),
        await api.make_offering(),
        await api.make_therapist(),
    )
    program = await make_program(api, org, offering)
    problem(await api.client.post(f"/v1/programs/{program['id']}/confirm", headers=api.admin), 409)
    ok(
        await api.client.post(
            f"/v1/programs/{program['id']}/assign",
            json={"therapist_id": therapist["id"]},
            headers=api.admin,
        )
    )
    ok(await api.client.post(f"/v1/programs/{program['id']}/confirm", headers=api.admin))
    problem(await api.client.post(f"/v1/programs/{program['id']}/confirm", headers=api.admin), 409)
    assert len(await sessions_of(api, program["id"])) == 4


async def test_an_assignment_that_would_double_book_lists_every_clash_and_changes_nothing(
    api: Api,
):
    org, offering, therapist = (
        await api.make_org(),
        await api.make_offering(),
        await api.make_therapist(),
    )
    first = await confirmed_program(api, org, offering, therapist)
    # Same Tuesdays, half an hour later: overlaps all four sessions of the first program.
    second = await make_program(api, org, offering, schedule={"start_time": "10:30"})
    response = await api.client.post(
        f"/v1/programs/{second['id']}/assign",
        json={"therapist_id": therapist["id"]},
        headers=api.admin,
    )
    body = problem(response, 409)
    clashing = {c["session_id"] for c in body["conflicts"]}
    assert clashing == {s["id"] for s in await sessions_of(api, first["id"])}
    assert (
        ok(await api.client.get(f"/v1/programs/{second['id']}", headers=api.admin))["therapist_id"]
        is None
    )


async def test_a_series_edit_from_the_fifth_session_rebuilds_only_what_follows(api: Api):
    org, offering, therapist = (
        await api.make_org(),
        await api.make_offering(),
        await api.make_therapist(),
    )
    program = await confirmed_program(
        api,
        org,
        offering,
        therapist,
        schedule={"start_date": str(FIRST_TUESDAY), "rrule": "FREQ=WEEKLY;BYDAY=TU;COUNT=8"},
    )
    before = await sessions_of(api, program["id"])
    fifth = before[4]
    from_fifth = FIRST_TUESDAY + timedelta(weeks=4)
    assert fifth["starts_at"] == utc_text(from_fifth, "10:00")
    changed = await api.client.patch(
        f"/v1/programs/{program['id']}",
        headers=api.admin,
        json={
            "effective_date": str(from_fifth),
            "rate_cents": 25000,
            "schedule": {
                "timezone": "America/Edmonton",
                "start_date": str(FIRST_TUESDAY),
                "start_time": "14:00",
                "rrule": "FREQ=WEEKLY;BYDAY=TU;COUNT=8",
            },
        },
    )
    assert ok(changed)["rate_cents"] == 25000
    after = await sessions_of(api, program["id"])
    assert [s["id"] for s in after[:4]] == [s["id"] for s in before[:4]]
    assert [s["starts_at"] for s in after[:4]] == [s["starts_at"] for s in before[:4]]
    assert [s["starts_at"] for s in after[4:]] == weekly(from_fifth, "14:00", 4)
    assert len(after) == 8


async def test_changing_a_confirmed_series_needs_an_effective_date(api: Api):
    org, offering, therapist = (
        await api.make_org(),
        await api.make_offering(),
        await api.make_therapist(),
    )
    program = await confirmed_program(api, org, offering, therapist)
    response = await api.client.patch(
        f"/v1/programs/{program['id']}", headers=api.admin, json={"rate_cents": 1}
    )
    assert invalid_fields(response) == ["effective_date"]


async def test_cancelling_a_program_cancels_the_future_and_keeps_the_past(api: Api):
    org, offering, therapist = (
        await api.make_org(),
        await api.make_offering(),
        await api.make_therapist(),
    )
    program = await confirmed_program(
        api,
        org,
        offering,
        therapist,
        schedule={"start_date": str(FIRST_TUESDAY), "rrule": "FREQ=WEEKLY;BYDAY=TU;COUNT=6"},
    )
    cancelled = ok(
        await api.client.post(
            f"/v1/programs/{program['id']}/cancel",
            headers=api.admin,
            json={
                "effective_date": str(FIRST_TUESDAY + timedelta(weeks=3)),
                "reason": "Budget cut",
            },
        )
    )
    assert cancelled["status"] == "cancelled"
    statuses = [s["status"] for s in await sessions_of(api, program["id"])]
    assert statuses == ["scheduled"] * 3 + ["cancelled"] * 3
    summary = ok(await api.client.get(f"/v1/programs/{program['id']}/summary", headers=api.admin))
    assert (
        summary["planned_sessions"],
        summary["scheduled_sessions"],
        summary["cancelled_sessions"],
    ) == (6, 3, 3)


async def test_sessions_keep_their_local_time_across_the_dst_change(api: Api):
    org = await api.make_org(timezone="America/New_York", holiday_region="US-NY", currency="USD")
    offering = await api.make_offering(currency="USD")
    therapist = await api.make_therapist(timezone="America/New_York")
    # The Tuesday before the next US change to summer time (second Sunday of March).
    spring = next_dst_start_sunday()
    tuesday = spring - timedelta(days=5)
    program = await confirmed_program(
        api,
        org,
        offering,
        therapist,
        schedule={
            "timezone": "America/New_York",
            "start_date": str(tuesday),
            "start_time": "09:00",
            "rrule": "FREQ=WEEKLY;BYDAY=TU;COUNT=2",
        },
    )
    starts = [s["starts_at"] for s in await sessions_of(api, program["id"])]
    # 09:00 EST is 14:00 UTC; after the change 09:00 EDT is 13:00 UTC.
    week_later = tuesday + timedelta(weeks=1)
    assert starts == [f"{tuesday}T14:00:00Z", f"{week_later}T13:00:00Z"]


async def test_a_monday_program_skips_family_day_and_makes_it_up_at_the_end(api: Api):
    org = await api.make_org(timezone="America/Edmonton", holiday_region="CA-AB")
    offering = await api.make_offering()
    therapist = await api.make_therapist()
    family_day = next_family_day()
    program = await confirmed_program(
        api,
        org,
        offering,
        therapist,
        schedule={
            "start_date": str(family_day - timedelta(weeks=1)),
            "start_time": "10:00",
            "rrule": "FREQ=WEEKLY;BYDAY=MO;COUNT=3",
            "skip_holidays": True,
        },
    )
    days = [s["starts_at"][:10] for s in await sessions_of(api, program["id"])]
    # The Monday before Family Day, then two Mondays after it.
    assert days == [str(family_day + timedelta(weeks=w)) for w in (-1, 1, 2)]


async def test_open_ended_programs_are_filled_to_the_horizon_once(api: Api, db):
    from datetime import UTC, datetime, timedelta

    from service.programs import materialize

    org, offering, therapist = (
        await api.make_org(),
        await api.make_offering(),
        await api.make_therapist(),
    )
    today = datetime.now(UTC).date()
    program = await confirmed_program(
        api,
        org,
        offering,
        therapist,
        schedule={"start_date": str(today + timedelta(days=1)), "rrule": "FREQ=DAILY"},
    )
    first_fill = await sessions_of(api, program["id"])
    assert len(first_fill) == 12 * 7 + 1  # tomorrow through 12 weeks later, inclusive

    later = today + timedelta(days=10)
    added = await materialize.extend_horizon(db, today=later, weeks=12)
    assert added == (later + timedelta(weeks=12) - (today + timedelta(days=1, weeks=12))).days
    assert await materialize.extend_horizon(db, today=later, weeks=12) == 0
    await db.commit()
    assert len(await sessions_of(api, program["id"])) == len(first_fill) + added
