"""Every staffing change is checked: overlap, credentials, availability, time off and weekly
load; one 409 names each offending session and reason, and nothing is written."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.programs_support import (
    FIRST_TUESDAY,
    confirmed_program,
    make_program,
    quiet_weekday,
    sessions_of,
    utc_text,
    weekly,
)
from tests.support import Api, ok, problem

WEEKDAYS_9_TO_5 = [
    {"weekday": d, "start": "09:00", "end": "17:00"} for d in ("MO", "TU", "WE", "TH", "FR")
]


async def assign(api: Api, program: dict[str, Any], therapist: dict[str, Any], **extra: Any) -> Any:
    return await api.client.post(
        f"/v1/programs/{program['id']}/assign",
        headers=api.admin,
        json={"therapist_id": therapist["id"], **extra},
    )


def reasons(response: Any) -> list[str]:
    return [c["reason"] for c in problem(response, 409)["conflicts"]]


async def test_sessions_outside_weekly_availability_are_refused_each_by_name(api: Api):
    org, offering = await api.make_org(), await api.make_offering()
    therapist = await api.make_therapist(availability=WEEKDAYS_9_TO_5)
    # Tuesdays at 08:00 Edmonton: before the 09:00 window opens.
    program = await make_program(api, org, offering, schedule={"start_time": "08:00"})
    response = await assign(api, program, therapist)
    conflicts = problem(response, 409)["conflicts"]
    assert [c["reason"] for c in conflicts] == ["outside_availability"] * 4
    assert [c["proposed_starts_at"] for c in conflicts] == weekly(FIRST_TUESDAY, "08:00", 4)
    assert (
        ok(await api.client.get(f"/v1/programs/{program['id']}", headers=api.admin))["therapist_id"]
        is None
    )


async def test_availability_is_read_in_the_therapists_own_time_zone(api: Api):
    org, offering = await api.make_org(timezone="America/Edmonton"), await api.make_offering()
    # 10:00 in Edmonton (UTC-6) is 11:00 in New York: inside a 11:00-13:00 New York window.
    windows = [{"weekday": "TU", "start": "11:00", "end": "13:00"}]
    therapist = await api.make_therapist(timezone="America/New_York", availability=windows)
    program = await make_program(api, org, offering)
    ok(await assign(api, program, therapist))


async def test_time_off_blocks_the_sessions_it_covers(api: Api):
    org, offering, therapist = (
        await api.make_org(),
        await api.make_offering(),
        await api.make_therapist(),
    )
    ok(
        await api.client.post(
            f"/v1/therapists/{therapist['id']}/time-off",
            headers=api.admin,
            json={
                # Monday to Wednesday midnight around the program's second Tuesday.
                "starts_at": utc_text(FIRST_TUESDAY + timedelta(days=6), "00:00"),
                "ends_at": utc_text(FIRST_TUESDAY + timedelta(days=8), "00:00"),
                "reason": "Conference",
            },
        ),
        201,
    )
    program = await make_program(api, org, offering)
    conflicts = problem(await assign(api, program, therapist), 409)["conflicts"]
    assert [(c["reason"], c["proposed_starts_at"]) for c in conflicts] == [
        ("time_off", utc_text(FIRST_TUESDAY + timedelta(weeks=1), "10:00"))
    ]


async def test_a_missing_credential_is_refused_and_cannot_be_overridden(api: Api):
    org = await api.make_org()
    offering = await api.make_offering(required_credentials=["NMT"])
    therapist = await api.make_therapist(credentials=["MTA"])
    program = await make_program(api, org, offering)
    assert reasons(await assign(api, program, therapist)) == ["missing_credentials"]
    assert reasons(await assign(api, program, therapist, override=True)) == ["missing_credentials"]
    qualified = await api.make_therapist(credentials=["MTA", "NMT"])
    ok(await assign(api, program, qualified))


async def test_more_than_the_weekly_maximum_is_refused_per_week(api: Api):
    org, offering = await api.make_org(), await api.make_offering(duration_minutes=60)
    therapist = await api.make_therapist(max_weekly_minutes=120)
    # Mon, Tue and Wed each week: 180 minutes against a 120-minute maximum.
    monday = quiet_weekday(0)
    program = await make_program(
        api,
        org,
        offering,
        schedule={"start_date": str(monday), "rrule": "FREQ=WEEKLY;BYDAY=MO,TU,WE;COUNT=3"},
    )
    conflicts = problem(await assign(api, program, therapist), 409)["conflicts"]
    assert {c["reason"] for c in conflicts} == {"weekly_load"}
    assert {(c["week_start"], c["week_minutes"]) for c in conflicts} == {(str(monday), 180)}
    assert len(conflicts) == 3


async def test_an_admin_may_override_availability_and_load_and_the_override_is_audited(
    api: Api,
):
    org, offering = await api.make_org(), await api.make_offering()
    therapist = await api.make_therapist(availability=[])
    program = await make_program(api, org, offering)
    assert set(reasons(await assign(api, program, therapist))) == {"outside_availability"}
    ok(await assign(api, program, therapist, override=True))
    ok(
        await api.client.post(
            f"/v1/programs/{program['id']}/confirm", headers=api.admin, json={"override": True}
        )
    )
    events = ok(
        await api.client.get(f"/v1/audit-events?entity_id={program['id']}", headers=api.admin)
    )["data"]
    overrides = [e for e in events if e["action"] == "program.staffing_overridden"]
    assert len(overrides) == 2
    assert {p["reason"] for p in overrides[0]["after"]["overridden"]} == {"outside_availability"}
    assert len(await sessions_of(api, program["id"])) == 4


async def test_only_an_admin_may_override(api: Api):
    org, offering = await api.make_org(), await api.make_offering()
    therapist = await api.make_therapist()
    program = await confirmed_program(api, org, offering, therapist)
    session = (await sessions_of(api, program["id"]))[0]
    own = await api.therapist_key(therapist["id"])
    response = await api.client.post(
        f"/v1/sessions/{session['id']}/substitute",
        headers=own,
        json={"therapist_id": therapist["id"], "override": True},
    )
    assert response.status_code == 403


async def test_a_substitute_takes_one_session_and_the_rest_stay(api: Api):
    org, offering = await api.make_org(), await api.make_offering()
    regular, cover = await api.make_therapist(), await api.make_therapist()
    program = await confirmed_program(api, org, offering, regular)
    sessions = await sessions_of(api, program["id"])
    moved = ok(
        await api.client.post(
            f"/v1/sessions/{sessions[1]['id']}/substitute",
            headers=api.admin,
            json={"therapist_id": cover["id"]},
        )
    )
    assert moved["therapist_id"] == cover["id"]
    after = await sessions_of(api, program["id"])
    assert [s["therapist_id"] for s in after] == [
        regular["id"],
        cover["id"],
        regular["id"],
        regular["id"],
    ]


async def test_a_substitute_who_is_busy_is_refused_with_the_clashing_session(api: Api):
    org, offering = await api.make_org(), await api.make_offering()
    regular, busy = await api.make_therapist(), await api.make_therapist()
    program = await confirmed_program(api, org, offering, regular)
    other = await confirmed_program(api, org, offering, busy)
    target = (await sessions_of(api, program["id"]))[0]
    clash = (await sessions_of(api, other["id"]))[0]
    response = await api.client.post(
        f"/v1/sessions/{target['id']}/substitute",
        headers=api.admin,
        json={"therapist_id": busy["id"]},
    )
    conflicts = problem(response, 409)["conflicts"]
    assert [(c["reason"], c["session_id"]) for c in conflicts] == [("overlap", clash["id"])]
    assert (await sessions_of(api, program["id"]))[0]["therapist_id"] == regular["id"]


async def test_handing_a_program_over_from_a_date_keeps_the_earlier_sessions(api: Api):
    org, offering = await api.make_org(), await api.make_offering()
    first, second = await api.make_therapist(), await api.make_therapist()
    program = await confirmed_program(api, org, offering, first)
    ok(await assign(api, program, second, effective_date=str(FIRST_TUESDAY + timedelta(weeks=2))))
    assert [s["therapist_id"] for s in await sessions_of(api, program["id"])] == [
        first["id"],
        first["id"],
        second["id"],
        second["id"],
    ]


async def test_a_reschedule_into_time_off_lists_the_reason(api: Api):
    friday = FIRST_TUESDAY + timedelta(days=3)  # a day off, and the session moved into it
    org, offering, therapist = (
        await api.make_org(),
        await api.make_offering(),
        await api.make_therapist(),
    )
    program = await confirmed_program(api, org, offering, therapist)
    ok(
        await api.client.post(
            f"/v1/therapists/{therapist['id']}/time-off",
            headers=api.admin,
            json={
                "starts_at": utc_text(friday, "00:00"),
                "ends_at": utc_text(friday + timedelta(days=1), "00:00"),
            },
        ),
        201,
    )
    session = (await sessions_of(api, program["id"]))[0]
    response = await api.client.patch(
        f"/v1/sessions/{session['id']}",
        headers=api.admin,
        json={"starts_at": utc_text(friday, "11:00")},
    )
    assert [(c["reason"], c["session_id"]) for c in problem(response, 409)["conflicts"]] == [
        ("time_off", session["id"])
    ]
