"""A series is a series, an exception stays an exception: sessions moved, cancelled or made up by
hand keep their identity (their occurrence) through later series edits and horizon regeneration,
and a session cancelled with notice can be made up once (POST /v1/sessions/{id}/make-up)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.webhooks import WebhookEvent
from service.programs import materialize
from tests.programs_support import confirmed_program, sessions_of
from tests.support import Api, ok, problem
from tests.test_sessions import ZONE, instant, local_today, running_program, utc_text

LIVE = ("scheduled", "completed", "no_show")


async def eight_tuesdays(api: Api) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """An 8-session weekly contract at 15:00 local from next week's first day on."""
    org = await api.make_org(timezone=ZONE)
    offering = await api.make_offering(rate_cents=10000)
    therapist = await api.make_therapist()
    start = local_today() + timedelta(days=7)
    program = await confirmed_program(
        api,
        org,
        offering,
        therapist,
        schedule={
            "timezone": ZONE,
            "start_date": start.isoformat(),
            "start_time": "15:00",
            "rrule": "FREQ=WEEKLY;COUNT=8",
        },
    )
    return program, await sessions_of(api, program["id"]), org


def live(sessions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in sessions if s["status"] in LIVE]


async def move_series_to(
    api: Api,
    program: dict[str, Any],
    clock: str,
    effective: str,
    rrule: str = "FREQ=WEEKLY;COUNT=8",
) -> Any:
    schedule = program["schedule"]
    return await api.client.patch(
        f"/v1/programs/{program['id']}",
        headers=api.admin,
        json={
            "effective_date": effective,
            "schedule": {
                "timezone": schedule["timezone"],
                "start_date": schedule["start_date"],
                "start_time": clock,
                "rrule": rrule,
            },
        },
    )


async def make_up(api: Api, session_id: str, starts_at: str, headers: Any = None) -> Any:
    return await api.client.post(
        f"/v1/sessions/{session_id}/make-up",
        json={"starts_at": starts_at},
        headers=headers or api.admin,
    )


async def test_a_series_edit_keeps_a_session_rescheduled_by_hand_and_the_contract_stays_8(
    api: Api,
):
    program, before, _ = await eight_tuesdays(api)
    start = local_today() + timedelta(days=7)
    moved_to = utc_text(instant(start + timedelta(days=29), "11:00"))  # 5th week, a day later
    ok(
        await api.client.patch(
            f"/v1/sessions/{before[4]['id']}", json={"starts_at": moved_to}, headers=api.admin
        )
    )

    ok(await move_series_to(api, program, "16:00", (start + timedelta(days=14)).isoformat()))

    after = await sessions_of(api, program["id"])
    assert len(live(after)) == 8
    assert [s["occurrence"] for s in after] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert after[4]["id"] == before[4]["id"]
    assert (after[4]["starts_at"], after[4]["rescheduled"]) == (moved_to, True)
    assert [s["id"] for s in after[:2]] == [s["id"] for s in before[:2]]
    assert [s["starts_at"] for s in after if s["occurrence"] != 5] == [
        utc_text(instant(start + timedelta(weeks=w), "15:00" if w < 2 else "16:00"))
        for w in (0, 1, 2, 3, 5, 6, 7)
    ]


async def test_a_session_cancelled_with_notice_is_not_planned_again_by_a_series_edit(api: Api):
    program, before, _ = await eight_tuesdays(api)
    start = local_today() + timedelta(days=7)
    ok(await api.client.post(f"/v1/sessions/{before[3]['id']}/cancel", headers=api.admin))

    ok(await move_series_to(api, program, "16:00", start.isoformat()))

    after = await sessions_of(api, program["id"])
    assert [(s["occurrence"], s["status"]) for s in after] == [
        (1, "scheduled"),
        (2, "scheduled"),
        (3, "scheduled"),
        (4, "cancelled"),
        (5, "scheduled"),
        (6, "scheduled"),
        (7, "scheduled"),
        (8, "scheduled"),
    ]
    assert after[3]["id"] == before[3]["id"]


async def test_a_make_up_replaces_a_cancelled_session_once_and_counts_once(
    api: Api, db: AsyncSession
):
    program, before, org = await eight_tuesdays(api)
    start = local_today() + timedelta(days=7)
    cancelled = ok(
        await api.client.post(f"/v1/sessions/{before[2]['id']}/cancel", headers=api.admin)
    )
    coordinator = await api.coordinator(org["id"])
    when = utc_text(instant(start + timedelta(days=17), "09:30"))

    made = ok(await make_up(api, cancelled["id"], when, coordinator), 201)

    assert (made["starts_at"], made["ends_at"]) == (
        when,
        utc_text(instant(start + timedelta(days=17), "10:30")),
    )
    assert (made["status"], made["occurrence"], made["makes_up"], made["made_up_by"]) == (
        "scheduled",
        3,
        cancelled["id"],
        None,
    )
    assert (made["program_id"], made["therapist_id"]) == (program["id"], before[2]["therapist_id"])
    original = ok(await api.client.get(f"/v1/sessions/{cancelled['id']}", headers=api.admin))
    assert (original["status"], original["made_up_by"], original["makes_up"]) == (
        "cancelled",
        made["id"],
        None,
    )
    assert len(live(await sessions_of(api, program["id"]))) == 8
    again = problem(await make_up(api, cancelled["id"], when), 409)
    assert (again["type"].rsplit("/", 1)[-1], again["made_up_by"]) == ("invalid-state", made["id"])
    [event] = (
        await db.scalars(
            select(WebhookEvent).where(
                col(WebhookEvent.type) == "session.made_up",
                WebhookEvent.data["id"].astext == made["id"],
            )
        )
    ).all()
    assert event.data == made

    # A later series edit keeps the make-up and the cancelled session, and plans nothing for
    # their occurrence: still 8 live sessions.
    ok(await move_series_to(api, program, "16:00", start.isoformat()))
    after = await sessions_of(api, program["id"])
    assert len(live(after)) == 8
    assert sorted(s["occurrence"] for s in live(after)) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert {s["id"] for s in after} >= {made["id"], cancelled["id"]}


async def test_only_a_session_cancelled_with_notice_can_be_made_up(api: Api):
    org = await api.make_org(timezone=ZONE)
    offering = await api.make_offering(cancellation_notice_hours=48)
    therapist = await api.make_therapist()
    _, sessions = await running_program(api, org, offering, therapist)
    coordinator = await api.coordinator(org["id"])
    when = utc_text(instant(local_today() + timedelta(days=3), "14:00"))
    # Tomorrow's session, cancelled by the organization inside the notice window: late.
    late = ok(
        await api.client.post(f"/v1/sessions/{sessions[3]['id']}/cancel", headers=coordinator)
    )
    assert late["status"] == "late_cancelled"

    for session_id in (late["id"], sessions[4]["id"]):
        refused = problem(await make_up(api, session_id, when), 409)
        assert refused["type"].rsplit("/", 1)[-1] == "invalid-state"
    assert len(await sessions_of(api, sessions[0]["program_id"])) == 6


async def test_a_make_up_is_checked_like_any_session(api: Api):
    program, before, _org = await eight_tuesdays(api)
    ok(await api.client.post(f"/v1/sessions/{before[1]['id']}/cancel", headers=api.admin))

    clash = problem(await make_up(api, before[1]["id"], before[3]["starts_at"]), 409)

    assert clash["type"].rsplit("/", 1)[-1] == "conflict"
    assert [(c["reason"], c["session_id"]) for c in clash["conflicts"]] == [
        ("overlap", before[3]["id"])
    ]
    past = await make_up(api, before[1]["id"], utc_text(instant(local_today(), "00:00")))
    assert past.status_code == 422
    after = await sessions_of(api, program["id"])
    assert len(after) == 8
    assert after[1]["made_up_by"] is None


async def test_make_ups_are_scoped_like_cancellations_and_replayed_by_idempotency_key(api: Api):
    program, before, _org = await eight_tuesdays(api)
    other = await api.make_org()
    ok(await api.client.post(f"/v1/sessions/{before[0]['id']}/cancel", headers=api.admin))
    when = utc_text(instant(local_today() + timedelta(days=9), "09:00"))

    stranger = await api.coordinator(other["id"])
    assert problem(await make_up(api, before[0]["id"], when, stranger), 404)["status"] == 404
    therapist = await api.therapist_key(before[0]["therapist_id"])
    assert problem(await make_up(api, before[0]["id"], when, therapist), 403)["status"] == 403

    headers = {**api.admin, "Idempotency-Key": "make-up-first"}
    first = await make_up(api, before[0]["id"], when, headers)
    replay = await make_up(api, before[0]["id"], when, headers)
    assert (first.status_code, replay.status_code) == (201, 201)
    assert replay.json() == first.json()
    assert len(await sessions_of(api, program["id"])) == 9


async def test_horizon_regeneration_never_plans_again_an_occurrence_handled_by_hand(
    api: Api, db: AsyncSession
):
    org = await api.make_org(timezone=ZONE)
    offering = await api.make_offering()
    therapist = await api.make_therapist()
    start = local_today() + timedelta(days=1)
    program = await confirmed_program(
        api,
        org,
        offering,
        therapist,
        schedule={
            "timezone": ZONE,
            "start_date": start.isoformat(),
            "start_time": "15:00",
            "rrule": "FREQ=WEEKLY",
        },
    )
    before = await sessions_of(api, program["id"])
    moved = utc_text(instant(start + timedelta(days=2), "09:00"))
    ok(
        await api.client.patch(
            f"/v1/sessions/{before[0]['id']}", json={"starts_at": moved}, headers=api.admin
        )
    )
    ok(await api.client.post(f"/v1/sessions/{before[1]['id']}/cancel", headers=api.admin))

    added = await materialize.extend_horizon(db, today=start, weeks=14)

    after = await sessions_of(api, program["id"])
    assert added == 2
    assert [s["occurrence"] for s in after] == list(range(1, len(before) + 3))
    assert (after[0]["id"], after[0]["starts_at"]) == (before[0]["id"], moved)
    assert (after[1]["id"], after[1]["status"]) == (before[1]["id"], "cancelled")
