"""Therapist suggestions: who can take the whole program, best first, and why the others can't."""

from __future__ import annotations

from datetime import timedelta

from tests.programs_support import (
    FIRST_TUESDAY,
    confirmed_program,
    make_program,
    sessions_of,
    utc_text,
)
from tests.support import Api, ok


async def test_suggestions_rank_eligible_therapists_by_fit_and_explain_the_others(api: Api):
    org = await api.make_org()
    offering = await api.make_offering(required_credentials=["MTA"])
    program = await make_program(
        api, org, offering, focus_areas=["focus_attention", "social_confidence"]
    )
    expert = await api.make_therapist(
        name="Expert", specialties=["focus_attention", "social_confidence"]
    )
    partial = await api.make_therapist(name="Partial", specialties=["focus_attention"])
    unqualified = await api.make_therapist(
        name="Unqualified", credentials=["MT-BC"], specialties=["focus_attention"]
    )
    unavailable = await api.make_therapist(
        name="Unavailable", availability=[], specialties=["focus_attention", "social_confidence"]
    )
    busy = await api.make_therapist(name="Busy", specialties=["focus_attention"])
    await confirmed_program(api, org, offering, busy)  # same Tuesdays at 10:00
    inactive = await api.make_therapist(name="Retired")
    ok(
        await api.client.patch(
            f"/v1/therapists/{inactive['id']}", headers=api.admin, json={"active": False}
        )
    )

    data = ok(
        await api.client.get(
            f"/v1/programs/{program['id']}/therapist-suggestions", headers=api.admin
        )
    )["data"]
    by_id = {s["therapist_id"]: s for s in data}
    assert inactive["id"] not in by_id
    eligible = [s["therapist_id"] for s in data if s["eligible"]]
    assert eligible == [expert["id"], partial["id"]]
    assert by_id[expert["id"]]["score"] > by_id[partial["id"]]["score"]
    assert [s["eligible"] for s in data] == [True, True, False, False, False]
    assert any("MTA" in r for r in by_id[unqualified["id"]]["reasons"])
    assert "outside_availability: 4 session(s)" in by_id[unavailable["id"]]["reasons"]
    assert "overlap: 4 session(s)" in by_id[busy["id"]]["reasons"]
    assert any("focus_attention, social_confidence" in r for r in by_id[expert["id"]]["reasons"])


async def test_continuity_with_the_organization_raises_the_score(api: Api):
    org = await api.make_org()
    offering = await api.make_offering()
    familiar = await api.make_therapist(name="Familiar")
    stranger = await api.make_therapist(name="Stranger")
    await confirmed_program(api, org, offering, familiar, schedule={"start_date": "2031-01-07"})
    program = await make_program(api, org, offering)
    data = ok(
        await api.client.get(
            f"/v1/programs/{program['id']}/therapist-suggestions", headers=api.admin
        )
    )["data"]
    by_id = {s["therapist_id"]: s for s in data}
    assert by_id[familiar["id"]]["score"] > by_id[stranger["id"]]["score"]
    assert "continuity: 4 session(s) with this organization" in by_id[familiar["id"]]["reasons"]


async def test_only_admins_see_suggestions(api: Api):
    org = await api.make_org()
    program = await make_program(api, org, await api.make_offering())
    coordinator = await api.coordinator(org["id"])
    response = await api.client.get(
        f"/v1/programs/{program['id']}/therapist-suggestions", headers=coordinator
    )
    assert response.status_code == 403


async def test_suggestions_cost_the_same_queries_for_many_therapists_and_sessions(api: Api, engine):
    from sqlalchemy import event

    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    async def queries_for(therapists: int, sessions: int) -> int:
        org = await api.make_org()
        for _ in range(therapists):
            await api.make_therapist()
        program = await make_program(
            api, org, await api.make_offering(), schedule={"rrule": f"FREQ=DAILY;COUNT={sessions}"}
        )
        statements.clear()
        event.listen(engine.sync_engine, "before_cursor_execute", count)
        try:
            ok(
                await api.client.get(
                    f"/v1/programs/{program['id']}/therapist-suggestions", headers=api.admin
                )
            )
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", count)
        return len(statements)

    small = await queries_for(therapists=2, sessions=3)
    large = await queries_for(therapists=12, sessions=60)
    # The same statements whatever the size (auth, the program, the candidates, their facts,
    # the response's reads): a change to this count is a change to the plan, made on purpose.
    assert (small, large) == (12, 12)


async def test_suggestions_count_each_refusal_against_what_the_therapists_hold(api: Api):
    org, elsewhere = await api.make_org(), await api.make_org()
    offering = await api.make_offering(duration_minutes=60)
    # Four Tuesdays at 10:00 from FIRST_TUESDAY, 60 minutes each.
    program = await make_program(api, org, offering, focus_areas=["stress_anxiety"])
    loaded = await api.make_therapist(name="Loaded", max_weekly_minutes=150)
    wednesday = FIRST_TUESDAY + timedelta(days=1)
    # Wednesdays and Thursdays of the same four weeks with another organization: 120 minutes a
    # week, so each Tuesday would make 180 of 150...
    booked = await confirmed_program(
        api,
        elsewhere,
        offering,
        loaded,
        schedule={"start_date": str(wednesday), "rrule": "FREQ=WEEKLY;BYDAY=WE,TH;COUNT=8"},
    )
    # ...except the second week, where a cancelled Wednesday frees its hour (120 of 150).
    second_wednesday = utc_text(wednesday + timedelta(weeks=1), "10:00")
    cancelled = next(
        s for s in await sessions_of(api, booked["id"]) if s["starts_at"] == second_wednesday
    )
    ok(await api.client.post(f"/v1/sessions/{cancelled['id']}/cancel", headers=api.admin, json={}))
    away = await api.make_therapist(name="Away")
    ok(
        await api.client.post(
            f"/v1/therapists/{away['id']}/time-off",
            headers=api.admin,
            json={
                "starts_at": utc_text(FIRST_TUESDAY + timedelta(weeks=2), "00:00"),
                "ends_at": utc_text(FIRST_TUESDAY + timedelta(weeks=2, days=1), "00:00"),
                "reason": "Conference",
            },
        ),
        201,
    )
    free = await api.make_therapist(name="Free")

    data = ok(
        await api.client.get(
            f"/v1/programs/{program['id']}/therapist-suggestions", headers=api.admin
        )
    )["data"]
    by_id = {s["therapist_id"]: s for s in data}
    match = "specialties match the program's focus: stress_anxiety"
    idle = "booked 0% of their maximum over the next 4 weeks"
    assert (by_id[free["id"]]["eligible"], by_id[free["id"]]["score"]) == (True, 80.0)
    assert by_id[free["id"]]["reasons"] == [match, idle]
    assert (by_id[away["id"]]["eligible"], by_id[away["id"]]["score"]) == (False, 80.0)
    assert by_id[away["id"]]["reasons"] == ["time_off: 1 session(s)", match, idle]
    assert (by_id[loaded["id"]]["eligible"], by_id[loaded["id"]]["score"]) == (False, 80.0)
    assert by_id[loaded["id"]]["reasons"] == ["weekly_load: 3 session(s)", match, idle]
