"""Double booking is impossible even when requests race: proven through a live server."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg

from tests.concurrency_support import Gate, race, wait_for_lock_waiters
from tests.conftest import LiveServer
from tests.support import ok

EDMONTON = ZoneInfo("America/Edmonton")


# How the database refuses the losers of a race: the exclusion constraint, or, when writes
# released together each wait on another's uncommitted row, PostgreSQL's deadlock detector (a
# retryable 409 collision). Either way never the application's own check, which all passed.
DATABASE_REFUSALS = {
    "The change overlaps an existing booking",
    "The change collided with another one at the same moment; send it again",
}


def weekday_ahead(weeks: int, weekday: int) -> date:
    """The `weekday` (0 = Monday) at least `weeks` weeks from today: always in the future."""
    start = datetime.now(UTC).date() + timedelta(weeks=weeks)
    return start + timedelta(days=(weekday - start.weekday()) % 7)


def instant(day: date, at: time) -> str:
    """Local wall-clock `at` on `day` in Edmonton, as a UTC ISO instant."""
    return datetime.combine(day, at, EDMONTON).astimezone(UTC).isoformat()


OVERLAPS = """
    SELECT count(*) FROM sessions a JOIN sessions b
      ON a.therapist_id = b.therapist_id AND a.id < b.id
     AND tstzrange(a.starts_at, a.ends_at) && tstzrange(b.starts_at, b.ends_at)
    WHERE a.status IN ('scheduled', 'completed', 'no_show')
      AND b.status IN ('scheduled', 'completed', 'no_show')
"""


async def post(client: httpx.AsyncClient, path: str, body: Any, headers: dict[str, str]) -> Any:
    return ok(await client.post(path, json=body, headers=headers), 201)


async def make_available(
    client: httpx.AsyncClient, therapist: dict[str, Any], headers: dict[str, str]
) -> None:
    windows = [
        {"weekday": d, "start": "06:00", "end": "22:00"}
        for d in ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
    ]
    ok(
        await client.put(
            f"/v1/therapists/{therapist['id']}/availability", json=windows, headers=headers
        )
    )


async def test_concurrent_conflicting_confirmations_let_exactly_one_win(
    contended_server: LiveServer, database_url: str
):
    """Eight programs for one therapist in overlapping hours are confirmed at once. All eight
    pass the application's staffing check (none is booked yet) and are held at the gate just
    before writing their sessions; the gate opens and the exclusion constraint lets exactly one
    win. Serialized, the gate would never hold all eight at once and the test fails; and the
    seven losers would then be refused by the staffing check instead of the constraint."""
    admin = await contended_server.admin_key()
    tuesday = weekday_ahead(8, 1)
    async with httpx.AsyncClient(base_url=contended_server.url, timeout=120) as client:
        org = await post(
            client,
            "/v1/organizations",
            {"name": "Race school", "kind": "school", "timezone": "America/Edmonton"},
            admin,
        )
        offering = await post(
            client,
            "/v1/offerings",
            {
                "name": "Group",
                "format": "group",
                "duration_minutes": 60,
                "rate_cents": 10000,
                "max_participants": 10,
            },
            admin,
        )
        therapist = await post(
            client,
            "/v1/therapists",
            {"name": "Racer", "email": "racer@ensemble.example", "timezone": "America/Edmonton"},
            admin,
        )
        await make_available(client, therapist, admin)
        programs = []
        for i in range(8):
            program = await post(
                client,
                "/v1/programs",
                {
                    "organization_id": org["id"],
                    "offering_id": offering["id"],
                    "title": f"Program {i}",
                    "modality": "online",
                    "video_url": "https://meet.example.org/race",
                    "participants": 5,
                    "schedule": {
                        "timezone": "America/Edmonton",
                        "start_date": str(tuesday),
                        "start_time": f"10:{i * 5:02d}",
                        "rrule": "FREQ=WEEKLY;BYDAY=TU;COUNT=10",
                    },
                },
                admin,
            )
            ok(
                await client.post(
                    f"/v1/programs/{program['id']}/assign",
                    json={"therapist_id": therapist["id"]},
                    headers=admin,
                )
            )
            programs.append(program)

        async with Gate(database_url, "sessions", ["INSERT"]) as gate:
            responses = await race(
                gate,
                [client.post(f"/v1/programs/{p['id']}/confirm", headers=admin) for p in programs],
            )

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * 7, [r.text for r in responses if r.status_code >= 500]
    refused = [r for r in responses if r.status_code == 409]
    assert {r.headers["content-type"] for r in refused} == {"application/problem+json"}
    # Refused by the database, not by a check that ran after the winner had committed.
    details = [r.json()["detail"] for r in refused]
    assert len(details) == 7
    assert set(details) <= DATABASE_REFUSALS, details
    with psycopg.connect(database_url) as conn:
        assert conn.execute(OVERLAPS).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM sessions").fetchone() == (10,)
        assert conn.execute(
            "SELECT count(*) FROM programs WHERE status = 'confirmed'"
        ).fetchone() == (1,)


async def test_the_schema_itself_refuses_an_overlap_that_a_racing_writer_slipped_past_checks(
    live_server: LiveServer, database_url: str
):
    """Two transactions insert overlapping sessions for one therapist: the second waits for the
    first (seen waiting on the first's lock in pg_stat_activity) and then fails on the
    exclusion constraint, whatever the application checked."""
    admin = await live_server.admin_key()
    tuesday = weekday_ahead(8, 1)
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as client:
        org = await post(
            client,
            "/v1/organizations",
            {"name": "Raw school", "kind": "school", "timezone": "America/Edmonton"},
            admin,
        )
        offering = await post(
            client,
            "/v1/offerings",
            {"name": "Solo", "format": "individual", "duration_minutes": 60, "rate_cents": 10000},
            admin,
        )
        therapist = await post(
            client,
            "/v1/therapists",
            {"name": "Raw", "email": "raw@ensemble.example", "timezone": "America/Edmonton"},
            admin,
        )
        program = await post(
            client,
            "/v1/programs",
            {
                "organization_id": org["id"],
                "offering_id": offering["id"],
                "title": "Raw",
                "modality": "online",
                "video_url": "https://meet.example.org/raw",
                "participants": 1,
                "schedule": {
                    "timezone": "America/Edmonton",
                    "start_date": str(tuesday),
                    "start_time": "10:00",
                    "rrule": "FREQ=WEEKLY;COUNT=1",
                },
            },
            admin,
        )
    insert = """
        INSERT INTO sessions (id, program_id, organization_id, therapist_id, starts_at, ends_at,
                              original_starts_at, occurrence, rate_cents, status, rescheduled,
                              sequence, created_at, updated_at)
        VALUES (gen_random_uuid(), %(program)s, %(org)s, %(therapist)s, %(starts)s, %(ends)s,
                %(starts)s, %(occurrence)s, 100, 'scheduled', false, 0, now(), now())
    """
    params = {"program": program["id"], "org": org["id"], "therapist": therapist["id"]}
    first = psycopg.connect(database_url)
    second = await psycopg.AsyncConnection.connect(database_url)
    try:
        first.execute(
            insert,
            {
                **params,
                "starts": instant(tuesday, time(10)),
                "ends": instant(tuesday, time(11)),
                "occurrence": 1,
            },
        )
        blocked = asyncio.create_task(
            second.execute(
                insert,
                {
                    **params,
                    "starts": instant(tuesday, time(10, 30)),
                    "ends": instant(tuesday, time(11, 30)),
                    "occurrence": 2,
                },
            )
        )
        # Waiting on the first transaction's uncommitted row (not merely slow).
        await wait_for_lock_waiters(database_url, first.info.backend_pid, 1, blocked)
        first.commit()
        try:
            await blocked
            raise AssertionError("the overlapping insert was accepted")
        except psycopg.errors.ExclusionViolation as error:
            assert error.diag.constraint_name == "ex_sessions_therapist_overlap"
    finally:
        first.close()
        await second.close()


async def test_twenty_mixed_requests_racing_for_one_therapist_hour_let_exactly_one_win(
    contended_server: LiveServer, database_url: str
):
    """Substitutes, reschedules and hand-overs all try to put one therapist into the same hour
    at once: exactly one succeeds, the rest get 409, and the database holds no overlap. All
    twenty pass their staffing checks and are held at the gate before they change a session;
    serialized, the gate would never hold all twenty at once and the test fails (and the
    losers would be refused by the staffing check rather than by the exclusion constraint)."""
    admin = await contended_server.admin_key()
    day = weekday_ahead(8, 1)
    next_day = day + timedelta(days=1)
    hour = instant(day, time(10))
    async with httpx.AsyncClient(base_url=contended_server.url, timeout=120) as client:
        org = await post(
            client,
            "/v1/organizations",
            {"name": "Crowded school", "kind": "school", "timezone": "America/Edmonton"},
            admin,
        )
        offering = await post(
            client,
            "/v1/offerings",
            {"name": "Solo", "format": "individual", "duration_minutes": 60, "rate_cents": 10000},
            admin,
        )

        async def therapist(name: str) -> dict[str, Any]:
            made = await post(
                client,
                "/v1/therapists",
                {"name": name, "email": f"{name}@ensemble.example", "timezone": "America/Edmonton"},
                admin,
            )
            await make_available(client, made, admin)
            return made

        async def one_session_program(staff: dict[str, Any], day: date, at: str) -> Any:
            program = await post(
                client,
                "/v1/programs",
                {
                    "organization_id": org["id"],
                    "offering_id": offering["id"],
                    "title": at,
                    "modality": "online",
                    "video_url": "https://meet.example.org/x",
                    "participants": 1,
                    "schedule": {
                        "timezone": "America/Edmonton",
                        "start_date": str(day),
                        "start_time": at,
                        "rrule": "FREQ=DAILY;COUNT=1",
                    },
                },
                admin,
            )
            ok(
                await client.post(
                    f"/v1/programs/{program['id']}/assign",
                    json={"therapist_id": staff["id"]},
                    headers=admin,
                )
            )
            ok(await client.post(f"/v1/programs/{program['id']}/confirm", headers=admin))
            sessions = ok(
                await client.get(f"/v1/sessions?program_id={program['id']}", headers=admin)
            )["data"]
            return program, sessions[0]

        target = await therapist("target")
        requests = []
        for i in range(7):  # others' sessions at the hour, substituted by the target
            _, session = await one_session_program(await therapist(f"sub{i}"), day, "10:00")
            requests.append(
                ("POST", f"/v1/sessions/{session['id']}/substitute", {"therapist_id": target["id"]})
            )
        for i in range(7):  # the target's own sessions elsewhere, moved into the hour
            _, session = await one_session_program(target, next_day, f"{8 + i:02d}:00")
            requests.append(("PATCH", f"/v1/sessions/{session['id']}", {"starts_at": hour}))
        for i in range(6):  # whole programs at the hour, handed over to the target
            program, _ = await one_session_program(await therapist(f"hand{i}"), day, "10:00")
            requests.append(
                ("POST", f"/v1/programs/{program['id']}/assign", {"therapist_id": target["id"]})
            )
        assert len(requests) == 20

        async with Gate(database_url, "sessions", ["UPDATE"]) as gate:
            responses = await race(
                gate,
                [
                    client.request(method, path, json=body, headers=admin)
                    for method, path, body in requests
                ],
            )

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * 19, [r.text for r in responses if r.status_code >= 500]
    refused = [r.json()["detail"] for r in responses if r.status_code == 409]
    assert len(refused) == 19
    assert set(refused) <= DATABASE_REFUSALS, refused
    with psycopg.connect(database_url) as conn:
        assert conn.execute(OVERLAPS).fetchone() == (0,)
        held = conn.execute(
            "SELECT count(*) FROM sessions WHERE therapist_id = %s AND starts_at = %s "
            "AND status = 'scheduled'",
            (target["id"], hour),
        ).fetchone()
        assert held == (1,)
