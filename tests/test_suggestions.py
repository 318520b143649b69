"""Therapist suggestions: who can take the whole program, best first, and why the others can't."""

from __future__ import annotations

from tests.programs_support import confirmed_program, make_program
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
