"""Tenant isolation, one promise at a time: programs and sessions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.programs_support import sessions_of
from tests.support import ok
from tests.tenant_isolation.walk import keys_of
from tests.tenant_isolation.world import MOVED_TO, World, monday_plus

# Programs and sessions. Programs carry money (rates): therapists never read them. Coordinators
# see their organization's programs and sessions, therapists the sessions they work.


async def test_coordinator_lists_sessions_and_sees_only_their_organizations(
    world: World,
) -> None:
    client = world.api.client
    page = ok(
        await client.get("/v1/sessions", params={"limit": "200"}, headers=world.coordinator_a)
    )
    own = [*world.sessions_a, *world.billing_a.sessions, world.observed_session]
    assert {s["id"] for s in page["data"]} == {s["id"] for s in own}
    assert {s["organization_id"] for s in page["data"]} == {world.org_a["id"]}
    for foreign_filter in (
        {"organization_id": world.org_b["id"]},
        {"program_id": world.program_b["id"]},
        {"therapist_id": world.therapist_2["id"]},
    ):
        response = await client.get(
            "/v1/sessions", params=foreign_filter, headers=world.coordinator_a
        )
        assert ok(response)["data"] == [], foreign_filter


async def test_coordinator_lists_programs_and_sees_only_their_organizations(
    world: World,
) -> None:
    client = world.api.client
    page = ok(await client.get("/v1/programs", headers=world.coordinator_a))
    own = [world.program_a, *world.billing_a.programs, world.observed_program]
    assert [p["id"] for p in page["data"]] == [p["id"] for p in own]
    response = await client.get(
        "/v1/programs",
        params={"organization_id": world.org_b["id"]},
        headers=world.coordinator_a,
    )
    assert ok(response)["data"] == []


@pytest.mark.parametrize("suffix", ["", "/summary"])
async def test_coordinator_cannot_read_another_organizations_program(
    world: World, suffix: str
) -> None:
    response = await world.api.client.get(
        f"/v1/programs/{world.program_b['id']}{suffix}", headers=world.coordinator_a
    )
    assert response.status_code == 404
    assert world.program_b["title"] not in response.text
    assert world.therapist_2["id"] not in response.text


async def test_coordinator_cannot_read_another_organizations_session(world: World) -> None:
    session_b = world.sessions_b[0]
    response = await world.api.client.get(
        f"/v1/sessions/{session_b['id']}", headers=world.coordinator_a
    )
    assert response.status_code == 404
    assert world.program_b["id"] not in response.text
    assert world.therapist_2["id"] not in response.text


async def test_coordinator_cannot_cancel_another_organizations_session(world: World) -> None:
    client = world.api.client
    session_b = world.sessions_b[0]
    response = await client.post(
        f"/v1/sessions/{session_b['id']}/cancel",
        json={"reason": "not ours"},
        headers=world.coordinator_a,
    )
    assert response.status_code == 404
    after = ok(await client.get(f"/v1/sessions/{session_b['id']}", headers=world.api.admin))
    assert after["status"] == "scheduled"
    assert after == session_b


async def test_coordinator_cannot_cancel_another_organizations_program(world: World) -> None:
    client = world.api.client
    response = await client.post(
        f"/v1/programs/{world.program_b['id']}/cancel",
        json={"effective_date": monday_plus(), "reason": "not ours"},
        headers=world.coordinator_a,
    )
    assert response.status_code == 404
    after = ok(await client.get(f"/v1/programs/{world.program_b['id']}", headers=world.api.admin))
    assert after == world.program_b
    assert [s["status"] for s in await sessions_of(world.api, world.program_b["id"])] == [
        "scheduled"
    ] * len(world.sessions_b)


# The API conventions: another tenant's resource is a 404, "never a 403", even for an action the
# caller's role may not take on its own resources (that is the 403 case). Programs and therapists
# resolve the resource first (`ProgramInPath`, `TherapistInPath`); these session actions must too.
FOREIGN_SESSION_ACTIONS = [
    ("coordinator", "PATCH", "", {"starts_at": MOVED_TO}),
    ("coordinator", "POST", "/complete", {"attendance": 1}),
    ("coordinator", "POST", "/no-show", None),
    ("therapist", "PATCH", "", {"starts_at": MOVED_TO}),
    ("therapist", "POST", "/cancel", {"reason": "not mine"}),
]


@pytest.mark.parametrize(
    ("caller", "method", "suffix", "body"),
    FOREIGN_SESSION_ACTIONS,
    ids=[f"{c}-{s.lstrip('/') or 'reschedule'}" for c, _, s, _ in FOREIGN_SESSION_ACTIONS],
)
async def test_a_session_action_the_role_may_not_take_is_still_404_on_a_foreign_session(
    world: World, caller: str, method: str, suffix: str, body: Any
) -> None:
    client = world.api.client
    session_b = world.sessions_b[0]
    headers = world.coordinator_a if caller == "coordinator" else world.therapist_1_key
    response = await client.request(
        method, f"/v1/sessions/{session_b['id']}{suffix}", json=body, headers=headers
    )
    assert response.status_code == 404, response.text
    after = ok(await client.get(f"/v1/sessions/{session_b['id']}", headers=world.api.admin))
    assert after == session_b


async def test_therapist_lists_sessions_and_sees_only_their_own(world: World) -> None:
    client = world.api.client
    page = ok(
        await client.get("/v1/sessions", params={"limit": "200"}, headers=world.therapist_1_key)
    )
    own = [*world.sessions_a, world.observed_session]
    assert {s["id"] for s in page["data"]} == {s["id"] for s in own}
    assert {s["therapist_id"] for s in page["data"]} == {world.therapist_1["id"]}
    for foreign_filter in (
        {"therapist_id": world.therapist_2["id"]},
        {"program_id": world.program_b["id"]},
        {"organization_id": world.org_b["id"]},
    ):
        response = await client.get(
            "/v1/sessions", params=foreign_filter, headers=world.therapist_1_key
        )
        assert ok(response)["data"] == [], foreign_filter


async def test_therapist_reads_their_own_session_but_not_another_therapists(
    world: World,
) -> None:
    client = world.api.client
    own = world.sessions_a[0]
    assert ok(await client.get(f"/v1/sessions/{own['id']}", headers=world.therapist_1_key)) == own
    foreign = await client.get(
        f"/v1/sessions/{world.sessions_b[0]['id']}", headers=world.therapist_1_key
    )
    assert foreign.status_code == 404
    assert world.program_b["id"] not in foreign.text


@pytest.mark.parametrize("who", ["own", "foreign"])
async def test_therapist_cannot_record_another_therapists_session(world: World, who: str) -> None:
    """Recording is a therapist's own business: T2's session is a 404 to T1 (T1's own, still in
    the future, is a 409: not yet started)."""
    client = world.api.client
    session = world.sessions_a[0] if who == "own" else world.sessions_b[0]
    for suffix, body in (("/complete", {"attendance": 1}), ("/no-show", None)):
        response = await client.post(
            f"/v1/sessions/{session['id']}{suffix}", json=body, headers=world.therapist_1_key
        )
        assert response.status_code == (409 if who == "own" else 404), response.text
    after = ok(await client.get(f"/v1/sessions/{session['id']}", headers=world.api.admin))
    assert after == session


@pytest.mark.parametrize("path", ["/v1/programs", "/v1/programs/{a}", "/v1/programs/{a}/summary"])
async def test_therapist_never_reads_programs_not_even_their_own(world: World, path: str) -> None:
    response = await world.api.client.get(
        path.format(a=world.program_a["id"]), headers=world.therapist_1_key
    )
    assert response.status_code == 403
    assert "rate_cents" not in response.text
    assert world.program_a["title"] not in response.text


async def test_therapists_own_view_lists_their_programs_and_sessions_without_money(
    world: World,
) -> None:
    client = world.api.client
    programs = ok(await client.get("/v1/me/programs", headers=world.therapist_1_key))
    assert [p["id"] for p in programs["data"]] == [
        world.program_a["id"],
        world.observed_program["id"],
    ]
    sessions = ok(
        await client.get("/v1/me/sessions", params={"limit": "200"}, headers=world.therapist_1_key)
    )
    own = [*world.sessions_a, world.observed_session]
    assert {s["id"] for s in sessions["data"]} == {s["id"] for s in own}
    for page in (programs, sessions):
        assert not [k for k in keys_of(page) if k.endswith("_cents")]
        assert world.program_b["title"] not in json.dumps(page)


async def test_each_caller_reads_one_by_one_exactly_the_sessions_of_its_reach(
    world: World,
) -> None:
    """A session read's statement is built once per kind of caller and serves every caller of
    that kind with its own organization or therapist: two coordinators and two therapists,
    interleaved, each read every session of the world."""
    api = world.api
    org_a = [*world.sessions_a, *world.billing_a.sessions, world.observed_session]
    org_b = [*world.sessions_b, *world.billing_b.sessions]
    everything = {s["id"] for s in [*org_a, *org_b]}
    worked_by = {
        therapist["id"]: {s["id"] for s in [*org_a, *org_b] if s["therapist_id"] == therapist["id"]}
        for therapist in (world.therapist_1, world.therapist_2)
    }
    assert worked_by[world.therapist_1["id"]] and worked_by[world.therapist_2["id"]]
    callers = [
        (world.coordinator_a, {s["id"] for s in org_a}),
        (await api.coordinator(world.org_b["id"]), {s["id"] for s in org_b}),
        (world.therapist_1_key, worked_by[world.therapist_1["id"]]),
        (
            await api.key("therapist", therapist_id=world.therapist_2["id"]),
            worked_by[world.therapist_2["id"]],
        ),
        (world.finance, everything),
        (api.admin, everything),
    ]
    read: list[set[str]] = [set() for _ in callers]
    for session_id in sorted(everything):
        for (headers, _), seen in zip(callers, read, strict=True):
            response = await api.client.get(f"/v1/sessions/{session_id}", headers=headers)
            assert response.status_code in (200, 404), response.text
            if response.status_code == 200:
                assert response.json()["id"] == session_id
                seen.add(session_id)
    assert read == [reach for _, reach in callers]


async def test_each_caller_reads_one_by_one_exactly_the_programs_of_its_reach(
    world: World,
) -> None:
    """The same for programs (built once per kind of caller): two coordinators interleaved with
    staff; a therapist reads none (programs carry rates), not even the one they deliver."""
    api = world.api
    org_a = {p["id"] for p in [world.program_a, *world.billing_a.programs, world.observed_program]}
    org_b = {p["id"] for p in [world.program_b, *world.billing_b.programs]}
    callers = [
        (world.coordinator_a, org_a, 404),
        (await api.coordinator(world.org_b["id"]), org_b, 404),
        (world.finance, org_a | org_b, 404),
        (api.admin, org_a | org_b, 404),
        (world.therapist_1_key, set(), 403),
    ]
    read: list[set[str]] = [set() for _ in callers]
    for program_id in sorted(org_a | org_b):
        for (headers, _, refused), seen in zip(callers, read, strict=True):
            response = await api.client.get(f"/v1/programs/{program_id}", headers=headers)
            assert response.status_code in (200, refused), response.text
            if response.status_code == 200:
                assert response.json()["id"] == program_id
                seen.add(program_id)
    assert read == [reach for _, reach, _ in callers]
