"""Erasure: a former therapist's personal data becomes a tombstone, everywhere the database kept
a copy, while their sessions and the invoices that bill them still add up and the erasure itself
is in the audit trail."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, TypeAdapter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from models.types import Email
from models.webhooks import EventType
from service.core import outbox
from tests.billing_support import complete, period, run
from tests.programs_support import confirmed_program, sessions_of
from tests.support import ALL_WEEK, Api, Headers, ok, problem

NAME = "Jane Erasable"
EMAIL = "jane.erasable@ensemble.example"
TIME_OFF_REASON = "Recovering from knee surgery"


class Mention(BaseModel):
    """A webhook payload that carried the therapist's name and email."""

    therapist_name: str
    therapist_email: str


@dataclass
class Former:
    therapist: dict[str, Any]
    key: Headers
    sessions: list[dict[str, Any]]
    invoice: dict[str, Any]


async def former_therapist(api: Api, db: AsyncSession) -> Former:
    """A therapist who delivered three sessions (billed on a draft invoice), kept a calendar,
    had a key of their own, appeared in a webhook payload, and was then deactivated."""
    org = await api.make_org(timezone="America/Edmonton")
    offering = await api.make_offering(rate_cents=12000)
    therapist = ok(
        await api.client.post(
            "/v1/therapists",
            json={
                "name": NAME,
                "email": EMAIL,
                "credentials": ["MTA", "NMT"],
                "specialties": ["stress_anxiety"],
                "languages": ["en", "fr"],
                "timezone": "America/Edmonton",
            },
            headers={**api.admin, "Idempotency-Key": "hire-jane"},
        ),
        201,
    )
    path = f"/v1/therapists/{therapist['id']}"
    ok(await api.client.put(f"{path}/availability", json=ALL_WEEK, headers=api.admin))
    key = await api.therapist_key(therapist["id"])
    soon = datetime.now(UTC) + timedelta(days=400)
    ok(
        await api.client.post(
            f"{path}/time-off",
            json={
                "starts_at": soon.isoformat(),
                "ends_at": (soon + timedelta(days=7)).isoformat(),
                "reason": TIME_OFF_REASON,
            },
            headers={**key, "Idempotency-Key": "my-time-off"},
        ),
        201,
    )
    ok(
        await api.client.post(
            "/v1/calendar-feeds",
            json={"therapist_id": therapist["id"]},
            headers={**key, "Idempotency-Key": "my-calendar"},
        ),
        201,
    )
    start = (datetime.now(UTC) - timedelta(days=20)).date()
    program = await confirmed_program(
        api,
        org,
        offering,
        therapist,
        schedule={
            "start_date": str(start),
            "start_time": "10:00",
            "rrule": "FREQ=DAILY;COUNT=3",
            "timezone": "America/Edmonton",
        },
    )
    sessions = await sessions_of(api, program["id"])
    for session in sessions:
        await complete(api, session)
    [draft] = await run(api, *period(), organization_id=org["id"])
    await outbox.publish(
        db, EventType.session_completed, Mention(therapist_name=NAME, therapist_email=EMAIL)
    )
    ok(await api.client.patch(path, json={"active": False}, headers=api.admin))
    invoice = ok(await api.client.get(f"/v1/invoices/{draft['id']}", headers=api.admin))
    return Former(therapist=therapist, key=key, sessions=sessions, invoice=invoice)


async def erase(api: Api, therapist_id: str, headers: Headers | None = None) -> Any:
    return await api.client.post(
        f"/v1/therapists/{therapist_id}/erase", headers=headers or api.admin
    )


async def tables_holding(db: AsyncSession, needle: str) -> list[str]:
    """Every table with a row whose text (bytea columns as hex) contains `needle`."""
    tables = (
        await db.execute(
            text(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1"
            )
        )
    ).scalars()
    found = []
    for table in list(tables):
        hits = (
            await db.execute(
                text(
                    f'SELECT count(*) FROM "{table}" AS r '
                    "WHERE strpos(CAST(row_to_json(r) AS text), :text) > 0 "
                    "OR strpos(CAST(row_to_json(r) AS text), :hex) > 0"
                ),
                {"text": needle, "hex": needle.encode().hex()},
            )
        ).scalar_one()
        if hits:
            found.append(f"{table} ({hits})")
    return found


async def test_erasing_a_former_therapist_leaves_a_tombstone_with_exact_values(
    api: Api, db: AsyncSession
):
    former = await former_therapist(api, db)
    therapist_id = former.therapist["id"]

    erased = ok(await erase(api, therapist_id))

    tombstone_email = f"erased-{therapist_id}@erased.invalid"
    assert erased == {
        "id": therapist_id,
        "name": "Former therapist",
        "email": tombstone_email,
        "credentials": [],
        "specialties": [],
        "languages": [],
        "timezone": "America/Edmonton",
        "max_weekly_minutes": 0,
        "active": False,
        "created_at": former.therapist["created_at"],
        "updated_at": erased["updated_at"],
        "erased_at": erased["erased_at"],
    }
    assert erased["erased_at"] is not None
    assert TypeAdapter(Email).validate_python(tombstone_email) == tombstone_email
    path = f"/v1/therapists/{therapist_id}"
    assert ok(await api.client.get(path, headers=api.admin)) == erased
    assert ok(await api.client.get(f"{path}/availability", headers=api.admin))["data"] == []
    assert ok(await api.client.get(f"{path}/time-off", headers=api.admin))["data"] == []
    keys = ok(await api.client.get("/v1/api-keys", params={"limit": 200}, headers=api.admin))
    assert [k["name"] for k in keys["data"] if k["therapist_id"] == therapist_id] == [
        "Former therapist's key"
    ]
    assert problem(await api.client.get("/v1/me", headers=former.key), 401)
    # A tombstone changes no more.
    renamed = await api.client.patch(path, json={"name": NAME}, headers=api.admin)
    assert problem(renamed, 409)["detail"] == f"Therapist {therapist_id} has been erased"


async def test_sessions_and_invoices_of_an_erased_therapist_still_add_up(
    api: Api, db: AsyncSession
):
    former = await former_therapist(api, db)

    ok(await erase(api, former.therapist["id"]))

    invoice = ok(await api.client.get(f"/v1/invoices/{former.invoice['id']}", headers=api.admin))
    assert invoice == former.invoice
    assert [line["amount_cents"] for line in invoice["lines"]] == [12000, 12000, 12000]
    assert invoice["subtotal_cents"] == 36000
    assert invoice["total_cents"] == invoice["subtotal_cents"] + invoice["tax_cents"] == 37800
    after = await sessions_of(api, former.sessions[0]["program_id"])
    assert [(s["id"], s["therapist_id"], s["status"]) for s in after] == [
        (s["id"], former.therapist["id"], "completed") for s in former.sessions
    ]


async def test_the_name_and_email_are_nowhere_in_the_database_after_erasure(
    api: Api, db: AsyncSession
):
    former = await former_therapist(api, db)
    # The world spread the data: the row, its audit snapshots, a webhook payload, time off
    # (idempotent replays are checked by their own test: their bodies may be stored encrypted).
    spread = [
        [t for t in await tables_holding(db, n) if not t.startswith("idempotency_keys")]
        for n in (NAME, EMAIL, TIME_OFF_REASON)
    ]
    assert spread == [
        ["audit_events (2)", "therapists (1)", "webhook_events (1)"],
        ["audit_events (2)", "therapists (1)", "webhook_events (1)"],
        ["audit_events (1)", "therapist_time_off (1)"],
    ]

    ok(await erase(api, former.therapist["id"]))

    assert [await tables_holding(db, n) for n in (NAME, EMAIL, TIME_OFF_REASON)] == [[], [], []]


async def replays(db: AsyncSession, where: str, **params: Any) -> int:
    query = text(f"SELECT count(*) FROM idempotency_keys WHERE {where}")
    count: int = (await db.execute(query, params)).scalar_one()
    return count


async def test_idempotent_replays_that_may_hold_the_personal_data_are_deleted(
    api: Api, db: AsyncSession
):
    former = await former_therapist(api, db)
    ok(
        await api.client.post(
            "/v1/organizations",
            json={"name": "Unrelated", "kind": "clinic", "timezone": "America/Edmonton"},
            headers={**api.admin, "Idempotency-Key": "unrelated-org"},
        ),
        201,
    )
    own_routes = f"/v1/therapists/{former.therapist['id']}/%"
    hiring = "path = '/v1/therapists'"
    time_off = "path LIKE :own"
    their_feed = "path = '/v1/calendar-feeds'"  # sent with the therapist's own key
    assert [
        await replays(db, hiring),
        await replays(db, time_off, own=own_routes),
        await replays(db, their_feed),
        await replays(db, "path = '/v1/organizations'"),
    ] == [1, 1, 1, 1]

    ok(await erase(api, former.therapist["id"], {**api.admin, "Idempotency-Key": "erase-jane"}))

    assert [
        await replays(db, hiring),
        await replays(db, time_off + " AND path NOT LIKE '%/erase'", own=own_routes),
        await replays(db, their_feed),
        await replays(db, "path = '/v1/organizations'"),
        await replays(db, "path LIKE '%/erase'"),
    ] == [0, 0, 0, 1, 1]


async def test_the_audit_trail_keeps_every_event_without_the_personal_data(
    api: Api, db: AsyncSession
):
    former = await former_therapist(api, db)
    therapist_id = former.therapist["id"]
    admin_key_id = ok(await api.client.get("/v1/me", headers=api.admin))["api_key_id"]
    actions_before = [e["action"] for e in await audit_events(api, therapist_id)]

    erased = ok(await erase(api, therapist_id))

    events = await audit_events(api, therapist_id)
    assert [e["action"] for e in events] == [*actions_before, "therapist.erased"]
    assert actions_before == [
        "therapist.created",
        "therapist.availability_replaced",
        "therapist.time_off_added",
        "therapist.updated",
    ]
    created, _, time_off, deactivated, erasure = events
    tombstone = {
        "name": "Former therapist",
        "email": f"erased-{therapist_id}@erased.invalid",
        "credentials": [],
        "specialties": [],
        "languages": [],
    }
    assert {k: created["after"][k] for k in tombstone} == tombstone
    assert created["after"]["timezone"] == "America/Edmonton"
    assert time_off["after"]["reason"] is None
    assert {k: deactivated["before"][k] for k in tombstone} == tombstone
    assert (deactivated["before"]["active"], deactivated["after"]["active"]) == (True, False)
    assert {
        key: erasure[key]
        for key in ("actor_role", "actor_key_id", "entity_type", "entity_id", "reason", "before")
    } == {
        "actor_role": "admin",
        "actor_key_id": admin_key_id,
        "entity_type": "therapist",
        "entity_id": therapist_id,
        "reason": "erasure",
        "before": None,
    }
    assert erasure["after"] == erased


async def audit_events(api: Api, entity_id: str) -> list[dict[str, Any]]:
    page = await api.client.get(
        "/v1/audit-events", params={"entity_id": entity_id, "limit": 200}, headers=api.admin
    )
    events: list[dict[str, Any]] = ok(page)["data"]
    return events


async def test_an_active_therapist_cannot_be_erased(api: Api):
    therapist = await api.make_therapist()

    response = await erase(api, therapist["id"])

    assert problem(response, 409)["detail"] == (
        f"Therapist {therapist['id']} is active: deactivate them first"
    )
    assert ok(await api.client.get(f"/v1/therapists/{therapist['id']}", headers=api.admin)) == (
        therapist
    )


async def test_a_therapist_with_sessions_still_to_come_cannot_be_erased(api: Api):
    org = await api.make_org()
    therapist = await api.make_therapist()
    start = (datetime.now(UTC) + timedelta(days=10)).date()
    program = await confirmed_program(
        api,
        org,
        await api.make_offering(),
        therapist,
        schedule={"start_date": str(start), "rrule": "FREQ=WEEKLY;COUNT=2"},
    )
    ok(
        await api.client.patch(
            f"/v1/therapists/{therapist['id']}", json={"active": False}, headers=api.admin
        )
    )

    response = await erase(api, therapist["id"])

    body = problem(response, 409)
    assert body["detail"] == (
        f"Therapist {therapist['id']} still has sessions to come: reassign or cancel them first"
    )
    sessions = await sessions_of(api, program["id"])
    assert [(c["reason"], c["session_id"]) for c in body["conflicts"]] == [
        ("session_to_come", s["id"]) for s in sessions
    ]
    assert [datetime.fromisoformat(c["starts_at"]) for c in body["conflicts"]] == [
        datetime.fromisoformat(s["starts_at"]) for s in sessions
    ]
    assert (
        ok(await api.client.get(f"/v1/therapists/{therapist['id']}", headers=api.admin))["name"]
        == therapist["name"]
    )


async def test_a_therapist_is_erased_once(api: Api, db: AsyncSession):
    former = await former_therapist(api, db)
    first = ok(await erase(api, former.therapist["id"]))

    again = await erase(api, former.therapist["id"])

    assert problem(again, 409)["detail"] == (
        f"Therapist {former.therapist['id']} has already been erased"
    )
    assert (
        ok(await api.client.get(f"/v1/therapists/{former.therapist['id']}", headers=api.admin))
        == first
    )


async def test_only_an_admin_erases_a_therapist(api: Api):
    therapist = await api.make_therapist()
    ok(
        await api.client.patch(
            f"/v1/therapists/{therapist['id']}", json={"active": False}, headers=api.admin
        )
    )
    colleague = await api.make_therapist()
    org = await api.make_org()
    finance = await api.key("finance")
    coordinator = await api.coordinator(org["id"])
    colleague_key = await api.therapist_key(colleague["id"])

    assert problem(await erase(api, therapist["id"], finance), 403)["detail"] == (
        "Only admin may erase therapists"
    )
    # Coordinators never touch the provider's staff; another therapist does not exist for them.
    assert problem(await erase(api, therapist["id"], coordinator), 403)["detail"] == (
        "Only admin, finance, therapist may read therapists"
    )
    assert problem(await erase(api, therapist["id"], colleague_key), 404)["detail"] == (
        f"Therapist {therapist['id']} not found"
    )
    assert problem(await erase(api, colleague["id"], colleague_key), 403)["detail"] == (
        "Only admin may erase therapists"
    )
    unchanged = ok(await api.client.get(f"/v1/therapists/{therapist['id']}", headers=api.admin))
    assert (unchanged["name"], unchanged["email"], unchanged["erased_at"]) == (
        therapist["name"],
        therapist["email"],
        None,
    )


async def test_erasure_deletes_the_therapists_notes_and_keeps_the_ratings(
    api: Api, db: AsyncSession
):
    former = await former_therapist(api, db)
    # Past the therapist's window: the admin recorded them.
    for n, session in enumerate(former.sessions):
        ok(
            await api.client.put(
                f"/v1/sessions/{session['id']}/observation",
                json={"ratings": {"stress_anxiety": 2 + n}, "note": f"Clinical note {n}"},
                headers=api.admin,
            ),
            201,
        )

    ok(await erase(api, former.therapist["id"]))

    kept = [
        ok(await api.client.get(f"/v1/sessions/{session['id']}/observation", headers=api.admin))
        for session in former.sessions
    ]
    assert [(o["ratings"], o["note"]) for o in kept] == [
        ({"stress_anxiety": 2}, None),
        ({"stress_anxiety": 3}, None),
        ({"stress_anxiety": 4}, None),
    ]
    stored = (
        await db.execute(
            text(
                "SELECT count(*) FILTER (WHERE note_ciphertext IS NOT NULL), count(*) "
                "FROM observations WHERE therapist_id = :t"
            ),
            {"t": former.therapist["id"]},
        )
    ).one()
    assert tuple(stored) == (0, 3)
