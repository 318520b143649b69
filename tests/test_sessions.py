"""The session lifecycle (complete, no-show, cancel, reschedule) and reading the calendar."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from tests.programs_support import confirmed_program, make_program, quiet_weekday, sessions_of
from tests.support import Api, Headers, invalid_fields, ok, problem

ZONE = "America/Edmonton"
RFC3339_WITH_OFFSET = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def local_today() -> date:
    return datetime.now(UTC).astimezone(ZoneInfo(ZONE)).date()


def instant(day: date, clock: str, zone: str = ZONE) -> datetime:
    """A local wall-clock time as a UTC instant."""
    return datetime.combine(day, time.fromisoformat(clock), ZoneInfo(zone)).astimezone(UTC)


def utc_text(moment: datetime) -> str:
    """How the API writes an instant: RFC 3339 in UTC with a Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


MONDAY = quiet_weekday(0)  # a Monday weeks ahead, starting weeks without holidays


def on(days: int, clock: str = "10:00", zone: str = ZONE) -> str:
    """Local `clock` `days` after MONDAY, as the API writes the instant."""
    return utc_text(instant(MONDAY + timedelta(days=days), clock, zone))


def last_sunday_of_march() -> date:
    """The next last Sunday of March (the EU's change to summer time) weeks ahead."""
    for year in (MONDAY.year, MONDAY.year + 1):
        end = date(year, 3, 31)
        sunday = end - timedelta(days=(end.weekday() + 1) % 7)
        if sunday > MONDAY:
            return sunday
    raise AssertionError("unreachable: every year has a last Sunday of March")


async def running_program(
    api: Api, org: dict[str, Any], offering: dict[str, Any], therapist: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A weekly program for 4 participants that an admin recorded while under way: sessions at
    10:00 local 20, 13 and 6 days ago, then tomorrow (inside a 48 hour notice window), in 8 days
    and in 15 days."""
    program = await confirmed_program(
        api,
        org,
        offering,
        therapist,
        participants=4,
        schedule={
            "timezone": ZONE,
            "start_date": (local_today() - timedelta(days=20)).isoformat(),
            "start_time": "10:00",
            "rrule": "FREQ=WEEKLY;COUNT=6",
        },
    )
    sessions = await sessions_of(api, program["id"])
    assert [s["starts_at"] for s in sessions] == [
        utc_text(instant(local_today() + timedelta(days=d), "10:00"))
        for d in (-20, -13, -6, 1, 8, 15)
    ]
    return program, sessions


async def one_off_program(
    api: Api,
    org: dict[str, Any],
    offering: dict[str, Any],
    therapist: dict[str, Any],
    day: date,
    clock: str,
) -> dict[str, Any]:
    """A confirmed program with a single session; returns that session."""
    program = await confirmed_program(
        api,
        org,
        offering,
        therapist,
        schedule={
            "timezone": ZONE,
            "start_date": day.isoformat(),
            "start_time": clock,
            "rrule": "FREQ=DAILY;COUNT=1",
        },
    )
    [session] = await sessions_of(api, program["id"])
    return session


async def setting(
    api: Api, **offering_overrides: Any
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    org = await api.make_org(timezone=ZONE)
    offering = await api.make_offering(
        **{"cancellation_notice_hours": 48, "late_cancel_fee_percent": 50, **offering_overrides}
    )
    therapist = await api.make_therapist()
    return org, offering, therapist


async def read_session(api: Api, session_id: str) -> dict[str, Any]:
    return ok(await api.client.get(f"/v1/sessions/{session_id}", headers=api.admin))


async def audit_trail(api: Api, entity_id: str) -> list[dict[str, Any]]:
    return ok(
        await api.client.get("/v1/audit-events", params={"entity_id": entity_id}, headers=api.admin)
    )["data"]


async def post(api: Api, session_id: str, action: str, headers: Headers, **body: Any) -> Any:
    return await api.client.post(f"/v1/sessions/{session_id}/{action}", json=body, headers=headers)


async def reschedule(api: Api, session_id: str, starts_at: str, headers: Headers) -> Any:
    return await api.client.patch(
        f"/v1/sessions/{session_id}", json={"starts_at": starts_at}, headers=headers
    )


async def all_sessions(api: Api, headers: Headers, **params: str) -> list[dict[str, Any]]:
    return ok(
        await api.client.get("/v1/sessions", params={"limit": "200", **params}, headers=headers)
    )["data"]


# --- completing and no-shows -------------------------------------------------------------------


async def test_a_therapist_completes_their_own_past_session_with_its_attendance(api: Api):
    org, offering, therapist = await setting(api)
    _, sessions = await running_program(api, org, offering, therapist)
    past = sessions[2]
    mine = await api.therapist_key(therapist["id"])

    completed = ok(await post(api, past["id"], "complete", mine, attendance=3))

    assert (completed["status"], completed["attendance"]) == ("completed", 3)
    assert completed["starts_at"] == past["starts_at"]
    assert await read_session(api, past["id"]) == completed
    [event] = await audit_trail(api, past["id"])
    assert (event["action"], event["actor_role"], event["entity_type"]) == (
        "session.completed",
        "therapist",
        "session",
    )
    assert (event["before"]["status"], event["before"]["attendance"]) == ("scheduled", None)
    assert (event["after"]["status"], event["after"]["attendance"]) == ("completed", 3)


async def test_attendance_may_be_anything_from_none_to_every_participant(api: Api):
    org, offering, therapist = await setting(api)
    _, sessions = await running_program(api, org, offering, therapist)

    nobody = ok(await post(api, sessions[0]["id"], "complete", api.admin, attendance=0))
    everyone = ok(await post(api, sessions[1]["id"], "complete", api.admin, attendance=4))

    assert (nobody["status"], nobody["attendance"]) == ("completed", 0)
    assert (everyone["status"], everyone["attendance"]) == ("completed", 4)


async def test_attendance_beyond_the_programs_participants_is_refused_and_changes_nothing(
    api: Api,
):
    org, offering, therapist = await setting(api)
    _, sessions = await running_program(api, org, offering, therapist)
    past = sessions[0]
    before = await read_session(api, past["id"])

    for attendance in (5, -1):
        response = await post(api, past["id"], "complete", api.admin, attendance=attendance)
        assert invalid_fields(response) == ["attendance"]
    assert invalid_fields(await post(api, past["id"], "complete", api.admin)) == ["attendance"]

    assert await read_session(api, past["id"]) == before
    assert await audit_trail(api, past["id"]) == []


async def test_a_session_that_has_not_started_cannot_be_completed_or_marked_no_show(api: Api):
    org, offering, therapist = await setting(api)
    _, sessions = await running_program(api, org, offering, therapist)
    tomorrow = sessions[3]
    before = await read_session(api, tomorrow["id"])

    problem(await post(api, tomorrow["id"], "complete", api.admin, attendance=2), 409)
    problem(await post(api, tomorrow["id"], "no-show", api.admin), 409)

    assert await read_session(api, tomorrow["id"]) == before
    assert await audit_trail(api, tomorrow["id"]) == []


async def test_a_session_under_way_may_be_completed(api: Api):
    org, offering, therapist = await setting(api)
    began = datetime.now(UTC).astimezone(ZoneInfo(ZONE)) - timedelta(minutes=5)
    program = await make_program(
        api,
        org,
        offering,
        participants=2,
        schedule={
            "timezone": ZONE,
            "start_date": began.date().isoformat(),
            "start_time": began.strftime("%H:%M"),
            "rrule": "FREQ=DAILY;COUNT=1",
        },
    )
    # Late in the evening the hour runs past the therapist's 23:59 availability: override it.
    staffing = {"therapist_id": therapist["id"], "override": True}
    ok(
        await api.client.post(
            f"/v1/programs/{program['id']}/assign", json=staffing, headers=api.admin
        )
    )
    ok(
        await api.client.post(
            f"/v1/programs/{program['id']}/confirm", json={"override": True}, headers=api.admin
        )
    )
    [now_playing] = await sessions_of(api, program["id"])

    done = ok(await post(api, now_playing["id"], "complete", api.admin, attendance=2))

    assert (done["status"], done["attendance"]) == ("completed", 2)


async def test_a_no_show_is_recorded_with_no_attendance(api: Api):
    org, offering, therapist = await setting(api)
    _, sessions = await running_program(api, org, offering, therapist)
    mine = await api.therapist_key(therapist["id"])

    missed = ok(await post(api, sessions[1]["id"], "no-show", mine))

    assert (missed["status"], missed["attendance"]) == ("no_show", 0)
    assert await read_session(api, sessions[1]["id"]) == missed
    [event] = await audit_trail(api, sessions[1]["id"])
    assert (event["action"], event["before"]["status"], event["after"]["status"]) == (
        "session.no_show",
        "scheduled",
        "no_show",
    )


async def test_a_completed_session_cannot_be_cancelled_recorded_again_or_moved(api: Api):
    org, offering, therapist = await setting(api)
    _, sessions = await running_program(api, org, offering, therapist)
    coordinator = await api.coordinator(org["id"])
    session_id = sessions[2]["id"]
    ok(await post(api, session_id, "complete", api.admin, attendance=4))
    before = await read_session(api, session_id)
    later = utc_text(instant(local_today() + timedelta(days=3), "16:00"))

    body = problem(await post(api, session_id, "cancel", coordinator, reason="Too late"), 409)
    assert body["session_id"] == session_id
    problem(await post(api, session_id, "cancel", api.admin), 409)
    problem(await post(api, session_id, "complete", api.admin, attendance=2), 409)
    problem(await post(api, session_id, "no-show", api.admin), 409)
    problem(await reschedule(api, session_id, later, api.admin), 409)

    assert await read_session(api, session_id) == before
    assert [e["action"] for e in await audit_trail(api, session_id)] == ["session.completed"]


async def test_a_cancelled_session_cannot_be_completed_marked_no_show_or_cancelled_again(
    api: Api,
):
    org, offering, therapist = await setting(api)
    _, sessions = await running_program(api, org, offering, therapist)
    # The therapist was ill last week: the provider records that the session did not happen.
    session_id = sessions[2]["id"]
    cancelled = ok(await post(api, session_id, "cancel", api.admin, reason="Therapist ill"))
    assert (cancelled["status"], cancelled["cancelled_by"]) == ("cancelled", "provider")

    problem(await post(api, session_id, "complete", api.admin, attendance=1), 409)
    problem(await post(api, session_id, "no-show", api.admin), 409)
    problem(await post(api, session_id, "cancel", api.admin), 409)

    assert await read_session(api, session_id) == cancelled
    assert [e["action"] for e in await audit_trail(api, session_id)] == ["session.cancelled"]


async def test_a_no_show_cannot_be_turned_into_a_completed_session(api: Api):
    org, offering, therapist = await setting(api)
    _, sessions = await running_program(api, org, offering, therapist)
    missed = ok(await post(api, sessions[0]["id"], "no-show", api.admin))

    problem(await post(api, sessions[0]["id"], "complete", api.admin, attendance=3), 409)
    problem(await post(api, sessions[0]["id"], "cancel", api.admin), 409)

    assert await read_session(api, sessions[0]["id"]) == missed


async def test_a_therapist_records_only_their_own_sessions(api: Api):
    org, offering, therapist = await setting(api)
    colleague = await api.make_therapist()
    _, sessions = await running_program(api, org, offering, therapist)
    theirs = await api.therapist_key(colleague["id"])
    before = await read_session(api, sessions[0]["id"])

    problem(await post(api, sessions[0]["id"], "complete", theirs, attendance=2), 404)
    problem(await post(api, sessions[0]["id"], "no-show", theirs), 404)
    problem(await api.client.get(f"/v1/sessions/{sessions[0]['id']}", headers=theirs), 404)

    assert await read_session(api, sessions[0]["id"]) == before


async def test_a_therapist_cannot_cancel_or_move_a_session(api: Api):
    org, offering, therapist = await setting(api)
    _, sessions = await running_program(api, org, offering, therapist)
    mine = await api.therapist_key(therapist["id"])
    before = await read_session(api, sessions[4]["id"])
    later = utc_text(instant(local_today() + timedelta(days=3), "16:00"))

    problem(await post(api, sessions[4]["id"], "cancel", mine), 403)
    problem(await reschedule(api, sessions[4]["id"], later, mine), 403)

    assert await read_session(api, sessions[4]["id"]) == before


async def test_a_coordinator_cannot_record_or_move_sessions_of_their_own_organization(api: Api):
    org, offering, therapist = await setting(api)
    _, sessions = await running_program(api, org, offering, therapist)
    coordinator = await api.coordinator(org["id"])
    finance = await api.key("finance")
    before = await read_session(api, sessions[0]["id"])
    later = utc_text(instant(local_today() + timedelta(days=3), "16:00"))

    for caller in (coordinator, finance):
        problem(await post(api, sessions[0]["id"], "complete", caller, attendance=2), 403)
        problem(await post(api, sessions[0]["id"], "no-show", caller), 403)
        problem(await reschedule(api, sessions[4]["id"], later, caller), 403)
    problem(await post(api, sessions[4]["id"], "cancel", finance), 403)

    assert await read_session(api, sessions[0]["id"]) == before
    assert await audit_trail(api, sessions[0]["id"]) == []


async def test_an_unknown_session_is_404_for_every_action(api: Api):
    missing = "00000000-0000-4000-8000-000000000000"
    later = utc_text(instant(local_today() + timedelta(days=3), "16:00"))

    problem(await api.client.get(f"/v1/sessions/{missing}", headers=api.admin), 404)
    problem(await post(api, missing, "complete", api.admin, attendance=1), 404)
    problem(await post(api, missing, "no-show", api.admin), 404)
    problem(await post(api, missing, "cancel", api.admin), 404)
    problem(await reschedule(api, missing, later, api.admin), 404)


# --- cancelling --------------------------------------------------------------------------------


async def test_a_coordinators_cancellation_inside_the_notice_window_is_a_late_cancellation(
    api: Api,
):
    org, offering, therapist = await setting(api)
    _, sessions = await running_program(api, org, offering, therapist)
    coordinator = await api.coordinator(org["id"])
    tomorrow = sessions[3]

    cancelled = ok(await post(api, tomorrow["id"], "cancel", coordinator, reason="Field trip"))

    assert (cancelled["status"], cancelled["cancelled_by"], cancelled["cancel_reason"]) == (
        "late_cancelled",
        "organization",
        "Field trip",
    )
    assert RFC3339_WITH_OFFSET.match(cancelled["cancelled_at"])
    assert await read_session(api, tomorrow["id"]) == cancelled
    [event] = await audit_trail(api, tomorrow["id"])
    assert (event["action"], event["actor_role"]) == ("session.cancelled", "coordinator")
    assert (event["before"]["status"], event["after"]["status"]) == ("scheduled", "late_cancelled")


async def test_a_coordinators_cancellation_a_week_ahead_is_free(api: Api):
    org, offering, therapist = await setting(api)
    _, sessions = await running_program(api, org, offering, therapist)
    coordinator = await api.coordinator(org["id"])

    cancelled = ok(await post(api, sessions[4]["id"], "cancel", coordinator, reason="Exams"))

    assert (cancelled["status"], cancelled["cancelled_by"], cancelled["cancel_reason"]) == (
        "cancelled",
        "organization",
        "Exams",
    )


async def test_the_notice_window_is_the_offerings_own(api: Api):
    # With no notice required, tomorrow's session is cancelled for free; with 400 hours (over
    # 16 days) required, even the session in 8 days is a late cancellation.
    org, short_notice, therapist = await setting(api, cancellation_notice_hours=0)
    _, sessions = await running_program(api, org, short_notice, therapist)
    long_notice = await api.make_offering(cancellation_notice_hours=400)
    _, others = await running_program(api, org, long_notice, await api.make_therapist())
    coordinator = await api.coordinator(org["id"])

    free = ok(await post(api, sessions[3]["id"], "cancel", coordinator))
    late = ok(await post(api, others[4]["id"], "cancel", coordinator))

    assert (free["status"], late["status"]) == ("cancelled", "late_cancelled")


async def test_the_providers_cancellation_inside_the_notice_window_is_free(api: Api):
    org, offering, therapist = await setting(api)
    _, sessions = await running_program(api, org, offering, therapist)

    cancelled = ok(await post(api, sessions[3]["id"], "cancel", api.admin, reason="Snowstorm"))

    assert (cancelled["status"], cancelled["cancelled_by"], cancelled["cancel_reason"]) == (
        "cancelled",
        "provider",
        "Snowstorm",
    )
    [event] = await audit_trail(api, sessions[3]["id"])
    assert (event["action"], event["actor_role"], event["after"]["status"]) == (
        "session.cancelled",
        "admin",
        "cancelled",
    )


async def test_an_admin_records_an_organizations_late_cancellation_taken_by_phone(api: Api):
    org, offering, therapist = await setting(api)
    _, sessions = await running_program(api, org, offering, therapist)

    late = ok(
        await post(
            api, sessions[3]["id"], "cancel", api.admin, cancelled_by="organization", reason="Call"
        )
    )
    early = ok(await post(api, sessions[4]["id"], "cancel", api.admin, cancelled_by="organization"))

    assert (late["status"], late["cancelled_by"]) == ("late_cancelled", "organization")
    assert (early["status"], early["cancelled_by"], early["cancel_reason"]) == (
        "cancelled",
        "organization",
        None,
    )


async def test_a_cancellation_needs_no_body(api: Api):
    org, offering, therapist = await setting(api)
    _, sessions = await running_program(api, org, offering, therapist)
    coordinator = await api.coordinator(org["id"])

    response = await api.client.post(
        f"/v1/sessions/{sessions[3]['id']}/cancel", headers=coordinator
    )

    cancelled = ok(response)
    assert (cancelled["status"], cancelled["cancel_reason"]) == ("late_cancelled", None)


async def test_a_coordinator_cannot_cancel_in_the_providers_name(api: Api):
    org, offering, therapist = await setting(api)
    _, sessions = await running_program(api, org, offering, therapist)
    coordinator = await api.coordinator(org["id"])
    before = await read_session(api, sessions[3]["id"])

    response = await post(api, sessions[3]["id"], "cancel", coordinator, cancelled_by="provider")

    assert invalid_fields(response) == ["cancelled_by"]
    assert invalid_fields(
        await post(api, sessions[3]["id"], "cancel", api.admin, cancelled_by="therapist")
    ) == ["cancelled_by"]
    assert invalid_fields(
        await post(api, sessions[3]["id"], "cancel", api.admin, reason="x", refund=True)
    ) == ["refund"]
    assert await read_session(api, sessions[3]["id"]) == before


async def test_a_coordinator_cannot_see_or_cancel_another_organizations_session(api: Api):
    org, offering, therapist = await setting(api)
    _, sessions = await running_program(api, org, offering, therapist)
    elsewhere = await api.coordinator((await api.make_org())["id"])
    before = await read_session(api, sessions[4]["id"])

    problem(await post(api, sessions[4]["id"], "cancel", elsewhere, reason="Mine now"), 404)
    problem(await api.client.get(f"/v1/sessions/{sessions[4]['id']}", headers=elsewhere), 404)

    assert await read_session(api, sessions[4]["id"]) == before
    assert await audit_trail(api, sessions[4]["id"]) == []


async def test_a_cancelled_session_frees_the_therapists_time(api: Api):
    org, offering, therapist = await setting(api)
    _, sessions = await running_program(api, org, offering, therapist)
    in_a_week = local_today() + timedelta(days=8)
    ok(await post(api, sessions[4]["id"], "cancel", api.admin))

    replacement = await one_off_program(api, org, offering, therapist, in_a_week, "10:00")

    assert replacement["starts_at"] == sessions[4]["starts_at"]


# --- rescheduling ------------------------------------------------------------------------------


async def test_an_admin_moves_a_session_to_a_free_time_and_it_keeps_its_length(api: Api):
    org, offering, therapist = await setting(api, duration_minutes=45)
    _, sessions = await running_program(api, org, offering, therapist)
    moved_to = instant(local_today() + timedelta(days=3), "14:15")

    moved = ok(await reschedule(api, sessions[4]["id"], utc_text(moved_to), api.admin))

    assert (moved["starts_at"], moved["ends_at"]) == (
        utc_text(moved_to),
        utc_text(moved_to + timedelta(minutes=45)),
    )
    assert (moved["status"], moved["rescheduled"], moved["timezone"]) == ("scheduled", True, ZONE)
    assert await read_session(api, sessions[4]["id"]) == moved
    others = [s for s in await sessions_of(api, moved["program_id"]) if s["id"] != moved["id"]]
    assert {s["rescheduled"] for s in others} == {False}
    [event] = await audit_trail(api, sessions[4]["id"])
    assert event["action"] == "session.rescheduled"
    assert (event["before"]["starts_at"], event["after"]["starts_at"]) == (
        sessions[4]["starts_at"],
        utc_text(moved_to),
    )


async def test_a_reschedule_given_with_an_offset_is_answered_in_utc(api: Api):
    org, offering, therapist = await setting(api)
    _, sessions = await running_program(api, org, offering, therapist)
    day = local_today() + timedelta(days=3)
    local = datetime.combine(day, time(9, 30), ZoneInfo(ZONE))

    moved = ok(await reschedule(api, sessions[4]["id"], local.isoformat(), api.admin))

    assert moved["starts_at"] == utc_text(local)


async def test_a_session_may_move_within_its_own_slot(api: Api):
    org, offering, therapist = await setting(api)
    _, sessions = await running_program(api, org, offering, therapist)
    half_an_hour_later = instant(local_today() + timedelta(days=8), "10:30")

    moved = ok(await reschedule(api, sessions[4]["id"], utc_text(half_an_hour_later), api.admin))

    assert moved["starts_at"] == utc_text(half_an_hour_later)


async def test_moving_onto_another_programs_session_of_the_therapist_is_a_conflict_naming_it(
    api: Api,
):
    org, offering, therapist = await setting(api)
    _, sessions = await running_program(api, org, offering, therapist)
    day = local_today() + timedelta(days=3)
    busy = await one_off_program(api, org, offering, therapist, day, "14:00")
    before = await read_session(api, sessions[4]["id"])

    body = problem(
        await reschedule(api, sessions[4]["id"], utc_text(instant(day, "14:30")), api.admin), 409
    )

    assert [c["session_id"] for c in body["conflicts"]] == [busy["id"]]
    [conflict] = body["conflicts"]
    assert (conflict["program_id"], conflict["therapist_id"]) == (
        busy["program_id"],
        therapist["id"],
    )
    assert await read_session(api, sessions[4]["id"]) == before
    assert await audit_trail(api, sessions[4]["id"]) == []


async def test_moving_onto_the_same_programs_next_session_is_a_conflict(api: Api):
    org, offering, therapist = await setting(api)
    _, sessions = await running_program(api, org, offering, therapist)
    onto_next = instant(local_today() + timedelta(days=15), "09:30")

    body = problem(await reschedule(api, sessions[4]["id"], utc_text(onto_next), api.admin), 409)

    assert [c["session_id"] for c in body["conflicts"]] == [sessions[5]["id"]]


async def test_moving_next_to_another_session_is_allowed(api: Api):
    org, offering, therapist = await setting(api)
    _, sessions = await running_program(api, org, offering, therapist)
    day = local_today() + timedelta(days=3)
    await one_off_program(api, org, offering, therapist, day, "14:00")

    moved = ok(await reschedule(api, sessions[4]["id"], utc_text(instant(day, "15:00")), api.admin))
    ok(await reschedule(api, sessions[5]["id"], utc_text(instant(day, "13:00")), api.admin))

    assert moved["starts_at"] == utc_text(instant(day, "15:00"))


async def test_another_therapists_session_at_that_time_is_no_conflict(api: Api):
    org, offering, therapist = await setting(api)
    _, sessions = await running_program(api, org, offering, therapist)
    day = local_today() + timedelta(days=3)
    await one_off_program(api, org, offering, await api.make_therapist(), day, "14:00")

    moved = ok(await reschedule(api, sessions[4]["id"], utc_text(instant(day, "14:00")), api.admin))

    assert moved["starts_at"] == utc_text(instant(day, "14:00"))


async def test_moving_into_the_therapists_time_off_is_refused_unless_an_admin_overrides(
    api: Api,
):
    org, offering, therapist = await setting(api)
    _, sessions = await running_program(api, org, offering, therapist)
    day = local_today() + timedelta(days=3)
    ok(
        await api.client.post(
            f"/v1/therapists/{therapist['id']}/time-off",
            json={
                "starts_at": utc_text(instant(day, "00:00")),
                "ends_at": utc_text(instant(day + timedelta(days=1), "00:00")),
                "reason": "Conference",
            },
            headers=api.admin,
        ),
        201,
    )
    before = await read_session(api, sessions[4]["id"])
    onto_time_off = utc_text(instant(day, "14:00"))

    body = problem(await reschedule(api, sessions[4]["id"], onto_time_off, api.admin), 409)
    assert [c["reason"] for c in body["conflicts"]] == ["time_off"]
    assert await read_session(api, sessions[4]["id"]) == before

    moved = ok(
        await api.client.patch(
            f"/v1/sessions/{sessions[4]['id']}",
            json={"starts_at": onto_time_off, "override": True},
            headers=api.admin,
        )
    )
    assert (moved["starts_at"], moved["rescheduled"]) == (onto_time_off, True)


async def test_a_move_into_the_past_to_a_time_without_an_offset_or_with_extra_fields_is_refused(
    api: Api,
):
    org, offering, therapist = await setting(api)
    _, sessions = await running_program(api, org, offering, therapist)
    before = await read_session(api, sessions[4]["id"])
    yesterday = instant(local_today() - timedelta(days=1), "10:00")
    naive = f"{local_today() + timedelta(days=3)}T10:00:00"

    for starts_at in (utc_text(yesterday), naive, "tomorrow", ""):
        response = await reschedule(api, sessions[4]["id"], starts_at, api.admin)
        assert invalid_fields(response) == ["starts_at"], starts_at
    response = await api.client.patch(
        f"/v1/sessions/{sessions[4]['id']}",
        json={"starts_at": utc_text(yesterday), "therapist_id": therapist["id"]},
        headers=api.admin,
    )
    assert invalid_fields(response) == ["therapist_id"]

    assert await read_session(api, sessions[4]["id"]) == before


# --- reading the calendar ----------------------------------------------------------------------


async def test_every_session_carries_its_programs_time_zone_and_offsets(api: Api):
    org = await api.make_org(timezone="Europe/Berlin")
    offering = await api.make_offering(duration_minutes=50)
    therapist = await api.make_therapist()
    # The Monday before Berlin changes to summer time, and the Monday after.
    before = last_sunday_of_march() - timedelta(days=6)
    after = before + timedelta(weeks=1)
    program = await confirmed_program(
        api,
        org,
        offering,
        therapist,
        schedule={
            "timezone": "Europe/Berlin",
            "start_date": str(before),
            "start_time": "09:00",
            "rrule": "FREQ=WEEKLY;COUNT=2",
        },
    )
    sessions = await sessions_of(api, program["id"])

    # 09:00 CET is 08:00 UTC; 09:00 CEST is 07:00 UTC.
    assert [(s["starts_at"], s["ends_at"]) for s in sessions] == [
        (f"{before}T08:00:00Z", f"{before}T08:50:00Z"),
        (f"{after}T07:00:00Z", f"{after}T07:50:00Z"),
    ]
    assert {s["timezone"] for s in sessions} == {"Europe/Berlin"}
    one = await read_session(api, sessions[0]["id"])
    assert one == sessions[0]
    for session in sessions:
        for field in ("starts_at", "ends_at", "created_at", "updated_at"):
            assert RFC3339_WITH_OFFSET.match(session[field]), (field, session[field])
    # The contract's fields (DESIGN.md, Sessions), plus the lifecycle's own.
    assert set(one) >= {
        "id",
        "program_id",
        "organization_id",
        "therapist_id",
        "starts_at",
        "ends_at",
        "timezone",
        "status",
        "attendance",
        "rescheduled",
        "cancelled_by",
        "cancel_reason",
        "cancelled_at",
        "invoice_id",
    }
    assert (one["status"], one["attendance"], one["invoice_id"], one["organization_id"]) == (
        "scheduled",
        None,
        None,
        org["id"],
    )


class Calendar:
    """Two organizations and two therapists, from MONDAY (weeks ahead):

    north (org), ana:  "choir"  4 Mondays from MONDAY, 10:00 Edmonton        4 sessions
    north (org), ben:  "drums"  3 Mondays from MONDAY, 10:00 Edmonton        3 sessions
    south (org), ana:  "calm"   2 Tuesdays from MONDAY + 1, 10:00 Edmonton   2 sessions
    """

    def __init__(self, api: Api) -> None:
        self.api = api

    async def build(self) -> Calendar:
        api = self.api
        self.north = await api.make_org(timezone=ZONE)
        self.south = await api.make_org(timezone=ZONE)
        offering = await api.make_offering()
        self.ana = await api.make_therapist()
        self.ben = await api.make_therapist()

        async def weekly(org: dict[str, Any], who: dict[str, Any], start: str, n: int) -> Any:
            return await confirmed_program(
                api,
                org,
                offering,
                who,
                schedule={
                    "timezone": ZONE,
                    "start_date": start,
                    "start_time": "10:00",
                    "rrule": f"FREQ=WEEKLY;COUNT={n}",
                },
            )

        self.choir = await weekly(self.north, self.ana, str(MONDAY), 4)
        self.drums = await weekly(self.north, self.ben, str(MONDAY), 3)
        self.calm = await weekly(self.south, self.ana, str(MONDAY + timedelta(days=1)), 2)
        return self


async def test_each_filter_narrows_the_calendar(api: Api):
    cal = await Calendar(api).build()
    [first_calm, _] = await sessions_of(api, cal.calm["id"])
    ok(await post(api, first_calm["id"], "cancel", api.admin))

    async def count(**params: str) -> int:
        return len(await all_sessions(api, api.admin, **params))

    assert await count() == 9
    assert await count(program_id=cal.choir["id"]) == 4
    assert await count(program_id=cal.drums["id"]) == 3
    assert await count(therapist_id=cal.ana["id"]) == 6
    assert await count(therapist_id=cal.ben["id"]) == 3
    assert await count(organization_id=cal.north["id"]) == 7
    assert await count(organization_id=cal.south["id"]) == 2
    assert await count(status="cancelled") == 1
    assert await count(status="scheduled") == 8
    assert await count(status="completed") == 0
    assert await count(organization_id=cal.south["id"], status="scheduled") == 1
    assert await count(therapist_id=cal.ana["id"], organization_id=cal.north["id"]) == 4
    assert await count(therapist_id=cal.ben["id"], program_id=cal.choir["id"]) == 0
    assert await count(program_id=cal.drums["id"], **{"from": str(MONDAY + timedelta(days=7))}) == 2


async def test_bad_filters_are_named_in_a_422(api: Api):
    for params, field in (
        ({"status": "done"}, "status"),
        ({"program_id": "choir"}, "program_id"),
        ({"therapist_id": "12"}, "therapist_id"),
        ({"organization_id": "x"}, "organization_id"),
        ({"from": "June"}, "from"),
        ({"to": f"{MONDAY.year}-13-01"}, "to"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ):
        response = await api.client.get("/v1/sessions", params=params, headers=api.admin)
        assert invalid_fields(response) == [field], params


async def test_from_and_to_dates_are_the_sessions_local_dates_and_inclusive(api: Api):
    # 18:30 in Edmonton (UTC-6) is 00:30 UTC the next day: local dates and UTC dates differ.
    org, offering, therapist = await setting(api)
    program = await confirmed_program(
        api,
        org,
        offering,
        therapist,
        schedule={
            "timezone": ZONE,
            "start_date": str(MONDAY),
            "start_time": "18:30",
            "rrule": "FREQ=DAILY;COUNT=5",
        },
    )

    day = [str(MONDAY + timedelta(days=n)) for n in range(5)]  # the sessions' local dates
    window = await all_sessions(api, api.admin, **{"from": day[1], "to": day[2]})
    one_day = await all_sessions(api, api.admin, **{"from": day[4], "to": day[4]})
    from_only = await all_sessions(api, api.admin, **{"from": day[3]})
    to_only = await all_sessions(api, api.admin, to=day[0])

    assert [s["starts_at"] for s in window] == [on(1, "18:30"), on(2, "18:30")]
    assert [s["starts_at"] for s in one_day] == [on(4, "18:30")]
    assert [s["starts_at"] for s in from_only] == [on(3, "18:30"), on(4, "18:30")]
    assert [s["starts_at"] for s in to_only] == [on(0, "18:30")]
    assert on(0, "18:30")[:10] == day[1]  # the UTC date is the next day
    assert {s["program_id"] for s in window} == {program["id"]}


async def test_local_dates_follow_each_programs_own_time_zone(api: Api):
    # The same instant, MONDAY 18:30 in Edmonton, is already Tuesday in Berlin.
    moment = instant(MONDAY, "18:30")
    in_berlin = moment.astimezone(ZoneInfo("Europe/Berlin"))
    tuesday = MONDAY + timedelta(days=1)
    assert in_berlin.date() == tuesday
    offering = await api.make_offering()
    therapist = await api.make_therapist()
    edmonton = await confirmed_program(
        api,
        await api.make_org(timezone=ZONE),
        offering,
        therapist,
        schedule={
            "timezone": ZONE,
            "start_date": str(MONDAY),
            "start_time": "18:30",
            "rrule": "FREQ=DAILY;COUNT=1",
        },
    )
    berlin = await confirmed_program(
        api,
        await api.make_org(timezone="Europe/Berlin"),
        offering,
        await api.make_therapist(),
        schedule={
            "timezone": "Europe/Berlin",
            "start_date": str(tuesday),
            "start_time": in_berlin.strftime("%H:%M"),
            "rrule": "FREQ=DAILY;COUNT=1",
        },
    )

    on_monday = await all_sessions(api, api.admin, **{"from": str(MONDAY), "to": str(MONDAY)})
    on_tuesday = await all_sessions(api, api.admin, **{"from": str(tuesday), "to": str(tuesday)})

    assert [s["program_id"] for s in on_monday] == [edmonton["id"]]
    assert [s["program_id"] for s in on_tuesday] == [berlin["id"]]
    assert on_monday[0]["starts_at"] == on_tuesday[0]["starts_at"] == utc_text(moment)


async def test_from_and_to_instants_include_the_start_and_exclude_the_end(api: Api):
    org, offering, therapist = await setting(api)
    await confirmed_program(
        api,
        org,
        offering,
        therapist,
        schedule={
            "timezone": ZONE,
            "start_date": str(MONDAY),
            "start_time": "18:30",
            "rrule": "FREQ=DAILY;COUNT=5",
        },
    )

    # The second and third sessions, written in UTC, in Edmonton's offset and in +01:00.
    second, third, fourth = (instant(MONDAY + timedelta(days=n), "18:30") for n in (1, 2, 3))
    edmonton, plus_one = ZoneInfo(ZONE), timezone(timedelta(hours=1))
    one_second = timedelta(seconds=1)
    utc = await all_sessions(api, api.admin, **{"from": utc_text(second), "to": utc_text(fourth)})
    local = await all_sessions(
        api,
        api.admin,
        **{
            "from": second.astimezone(edmonton).isoformat(),
            "to": fourth.astimezone(edmonton).isoformat(),
        },
    )
    plus = await all_sessions(
        api,
        api.admin,
        **{
            "from": second.astimezone(plus_one).isoformat(),
            "to": (second + one_second).astimezone(plus_one).isoformat(),
        },
    )
    a_second_late = await all_sessions(
        api,
        api.admin,
        **{"from": utc_text(second + one_second), "to": utc_text(third + one_second)},
    )

    assert [s["starts_at"] for s in utc] == [utc_text(second), utc_text(third)]
    assert [s["starts_at"] for s in local] == [utc_text(second), utc_text(third)]
    assert [s["starts_at"] for s in plus] == [utc_text(second)]
    assert [s["starts_at"] for s in a_second_late] == [utc_text(third)]


async def test_a_window_given_as_a_time_without_an_offset_is_refused(api: Api):
    naive = f"{MONDAY}T00:30:00"
    for params in ({"from": naive}, {"to": naive}):
        response = await api.client.get("/v1/sessions", params=params, headers=api.admin)
        assert invalid_fields(response) == [next(iter(params))], params


async def test_pages_of_two_walk_every_session_once_in_start_order(api: Api):
    cal = await Calendar(api).build()
    everything = await all_sessions(api, api.admin)
    assert len(everything) == 9

    walked: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = ok(await api.client.get("/v1/sessions", params=params, headers=api.admin))
        pages += 1
        assert len(page["data"]) == (2 if page["next_cursor"] else 1)
        walked += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert pages == 5
    assert [s["id"] for s in walked] == [s["id"] for s in everything]
    assert len({s["id"] for s in walked}) == 9
    # Choir and drums share their Monday slots: the order is by start, ties broken stably.
    assert [s["starts_at"] for s in walked] == [on(d) for d in (0, 0, 1, 7, 7, 8, 14, 14, 21)]
    assert {s["program_id"] for s in walked} == {
        cal.choir["id"],
        cal.drums["id"],
        cal.calm["id"],
    }


async def test_pages_keep_their_filters(api: Api):
    cal = await Calendar(api).build()
    walked: list[str] = []
    params = {"limit": "2", "therapist_id": cal.ana["id"], "from": str(MONDAY + timedelta(days=1))}
    while True:
        page = ok(await api.client.get("/v1/sessions", params=params, headers=api.admin))
        walked += [s["starts_at"] for s in page["data"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]

    assert walked == [on(d) for d in (1, 7, 8, 14, 21)]


async def test_a_coordinator_sees_only_their_organizations_sessions(api: Api):
    cal = await Calendar(api).build()
    north = await api.coordinator(cal.north["id"])

    mine = await all_sessions(api, north)
    asked_for_theirs = await all_sessions(api, north, organization_id=cal.south["id"])
    by_program = await all_sessions(api, north, program_id=cal.calm["id"])
    by_therapist = await all_sessions(api, north, therapist_id=cal.ana["id"])

    assert len(mine) == 7
    assert {s["organization_id"] for s in mine} == {cal.north["id"]}
    assert asked_for_theirs == []
    assert by_program == []
    assert {s["program_id"] for s in by_therapist} == {cal.choir["id"]}
    assert len(by_therapist) == 4
    [theirs, _] = await sessions_of(api, cal.calm["id"])
    problem(await api.client.get(f"/v1/sessions/{theirs['id']}", headers=north), 404)


async def test_a_therapist_sees_only_their_own_sessions(api: Api):
    cal = await Calendar(api).build()
    ben = await api.therapist_key(cal.ben["id"])

    mine = await all_sessions(api, ben)
    asked_for_anas = await all_sessions(api, ben, therapist_id=cal.ana["id"])

    assert len(mine) == 3
    assert {s["program_id"] for s in mine} == {cal.drums["id"]}
    assert asked_for_anas == []
    [anas, *_] = await sessions_of(api, cal.choir["id"])
    problem(await api.client.get(f"/v1/sessions/{anas['id']}", headers=ben), 404)
    own = ok(await api.client.get(f"/v1/sessions/{mine[0]['id']}", headers=ben))
    assert own == mine[0]


async def test_finance_reads_every_organizations_sessions(api: Api):
    await Calendar(api).build()
    finance = await api.key("finance")

    assert len(await all_sessions(api, finance)) == 9


async def test_reading_sessions_needs_an_api_key(api: Api):
    problem(await api.client.get("/v1/sessions"), 401)
