"""Money under concurrency, through a live server: runs never bill a session twice, issues
get consecutive numbers, payments never exceed the amount due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from tests.concurrency_support import Gate, race, race_behind_lock
from tests.conftest import LiveServer
from tests.support import ALL_WEEK, ok


class World:
    def __init__(self, client: httpx.AsyncClient, admin: dict[str, str]) -> None:
        self.client, self.admin, self.serial = client, admin, 0

    async def post(self, path: str, body: Any, status: int = 201) -> Any:
        return ok(await self.client.post(path, json=body, headers=self.admin), status)

    async def delivered_org(self, sessions: int) -> dict[str, Any]:
        """An organization with `sessions` completed sessions from last month."""
        self.serial += 1
        org = await self.post(
            "/v1/organizations",
            {
                "name": f"Org {self.serial}",
                "kind": "clinic",
                "timezone": "America/Edmonton",
                "tax_rate_bps": 500,
            },
        )
        offering = await self.post(
            "/v1/offerings",
            {"name": "Solo", "format": "individual", "duration_minutes": 30, "rate_cents": 9999},
        )
        therapist = await self.post(
            "/v1/therapists",
            {
                "name": "T",
                "email": f"t{self.serial}@ensemble.example",
                "timezone": "America/Edmonton",
            },
        )
        ok(
            await self.client.put(
                f"/v1/therapists/{therapist['id']}/availability", json=ALL_WEEK, headers=self.admin
            )
        )
        start = (datetime.now(UTC) - timedelta(days=30)).date()
        program = await self.post(
            "/v1/programs",
            {
                "organization_id": org["id"],
                "offering_id": offering["id"],
                "title": "P",
                "modality": "online",
                "video_url": "https://meet.example.org/p",
                "participants": 1,
                "schedule": {
                    "timezone": "America/Edmonton",
                    "start_date": str(start),
                    "start_time": "09:00",
                    "rrule": f"FREQ=DAILY;COUNT={sessions}",
                },
            },
        )
        await self.post(
            f"/v1/programs/{program['id']}/assign", {"therapist_id": therapist["id"]}, 200
        )
        await self.post(f"/v1/programs/{program['id']}/confirm", {}, 200)
        listed = ok(
            await self.client.get(
                f"/v1/sessions?program_id={program['id']}&limit=200", headers=self.admin
            )
        )["data"]
        for session in listed:
            await self.post(f"/v1/sessions/{session['id']}/complete", {"attendance": 1}, 200)
        return org


def last_two_months() -> dict[str, str]:
    today = datetime.now(UTC).date()
    return {"period_start": str(today - timedelta(days=60)), "period_end": str(today)}


async def test_concurrent_invoice_runs_never_bill_a_session_twice(
    contended_server: LiveServer, database_url: str
):
    """Six runs are held at the gate before they write their drafts, all six at once, then
    race: each has already seen the same 24 unbilled sessions. Serialized, the gate would
    never hold six at once and the test fails."""
    admin = await contended_server.admin_key()
    async with httpx.AsyncClient(base_url=contended_server.url, timeout=120) as client:
        world = World(client, admin)
        for _ in range(3):
            await world.delivered_org(sessions=8)
        async with Gate(database_url, "invoices", ["INSERT"]) as gate:
            responses = await race(
                gate,
                [
                    client.post("/v1/invoice-runs", json=last_two_months(), headers=admin)
                    for _ in range(6)
                ],
            )
    assert [r.status_code for r in responses] == [201] * 6
    # The first run to write its drafts holds them until it commits; the others then find
    # every session billed and touch no draft.
    assert sorted(len(r.json()["data"]) for r in responses) == [0] * 5 + [3]
    with psycopg.connect(database_url) as conn:
        assert conn.execute(
            "SELECT count(*), count(DISTINCT session_id) FROM invoice_lines WHERE live"
        ).fetchone() == (24, 24)
        assert conn.execute("SELECT count(*) FROM invoices").fetchone() == (3,)
        assert conn.execute(
            "SELECT count(*) FROM invoices i WHERE subtotal_cents <> "
            "(SELECT sum(amount_cents) FROM invoice_lines l WHERE l.invoice_id = i.id)"
        ).fetchone() == (0,)


async def test_concurrent_issues_get_consecutive_numbers_without_gaps(
    contended_server: LiveServer, database_url: str
):
    """Eight issues are held at the gate before they take a number, all eight at once, then
    race for the counter row. Serialized, the gate would never hold eight at once and the
    test fails."""
    admin = await contended_server.admin_key()
    async with httpx.AsyncClient(base_url=contended_server.url, timeout=120) as client:
        world = World(client, admin)
        for _ in range(8):
            await world.delivered_org(sessions=1)
        drafts = ok(
            await client.post("/v1/invoice-runs", json=last_two_months(), headers=admin), 201
        )["data"]
        assert len(drafts) == 8
        async with Gate(database_url, "document_counters", ["INSERT"]) as gate:
            responses = await race(
                gate, [client.post(f"/v1/invoices/{d['id']}/issue", headers=admin) for d in drafts]
            )
    assert [r.status_code for r in responses] == [200] * 8
    numbers = sorted(int(r.json()["number"].rsplit("-", 1)[1]) for r in responses)
    assert numbers == list(range(numbers[0], numbers[0] + 8))
    with psycopg.connect(database_url) as conn:
        last = conn.execute(
            "SELECT last_number FROM document_counters WHERE series = 'INV'"
        ).fetchone()
    assert last == (numbers[-1],)


async def test_concurrent_payments_never_exceed_the_amount_due(
    contended_server: LiveServer, database_url: str
):
    """The test locks the invoice row itself, sends ten payments together and lets go only
    when all ten wait for that lock (pg_stat_activity): they are in flight at once, each about
    to lock the invoice. Serialized, never more than one would wait and the test fails."""
    admin = await contended_server.admin_key()
    async with httpx.AsyncClient(base_url=contended_server.url, timeout=120) as client:
        world = World(client, admin)
        await world.delivered_org(sessions=4)
        draft = ok(
            await client.post("/v1/invoice-runs", json=last_two_months(), headers=admin), 201
        )["data"][0]
        invoice = ok(await client.post(f"/v1/invoices/{draft['id']}/issue", headers=admin))
        # 4 sessions at 99.99 plus 5 % tax: 399.96 + 20.00.
        assert invoice["total_cents"] == 41996
        quarter = 10499
        responses = await race_behind_lock(
            database_url,
            "SELECT 1 FROM invoices WHERE id = %s FOR UPDATE",
            (draft["id"],),
            [
                client.post(
                    f"/v1/invoices/{draft['id']}/payments",
                    headers=admin,
                    json={"amount_cents": quarter, "method": "bank_transfer"},
                )
                for _ in range(10)
            ],
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 4 + [409] * 6, [r.text for r in responses]
    with psycopg.connect(database_url) as conn:
        paid = conn.execute(
            "SELECT amount_paid_cents, total_cents FROM invoices WHERE id = %s", (draft["id"],)
        ).fetchone()
        payments = conn.execute("SELECT count(*), sum(amount_cents) FROM payments").fetchone()
    assert paid == (4 * quarter, invoice["total_cents"])
    assert payments == (4, 4 * quarter)
