"""Stripe pushes under real concurrency, through a live server on a committed database."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import psycopg

from tests.billing_support import complete, delivered_program, period, run
from tests.conftest import LiveServer
from tests.fake_stripe import FakeStripe, stripe_fixtures
from tests.support import Api, ok

stripe_server, fake_stripe, settings = stripe_fixtures()


async def draft_in(api: Api, org: dict[str, Any], currency: str) -> dict[str, Any]:
    _, sessions = await delivered_program(api, org, currency=currency, sessions=2)
    for session in sessions:
        await complete(api, session)
    drafts = await run(api, *period(), organization_id=org["id"])
    (draft,) = [d for d in drafts if d["currency"] == currency]
    return draft


async def test_invoices_of_one_organization_issued_at_once_share_one_stripe_customer(
    live_server: LiveServer, fake_stripe: FakeStripe
):
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as http:
        api = Api(client=http, admin=await live_server.admin_key())
        org = await api.make_org(tax_rate_bps=500)
        drafts = [await draft_in(api, org, currency) for currency in ("CAD", "USD", "EUR")]
        issued = await asyncio.gather(
            *(http.post(f"/v1/invoices/{d['id']}/issue", headers=api.admin) for d in drafts)
        )
    assert [ok(r)["stripe_sync_status"] for r in issued] == ["synced"] * 3
    assert len(fake_stripe.customers_of(org["id"])) == 1
    for draft in drafts:
        (stripe_invoice,) = fake_stripe.invoices_of(draft["id"])
        assert stripe_invoice["customer"] == fake_stripe.customers_of(org["id"])[0]["id"]


async def test_resumes_requested_at_once_push_the_invoice_once(
    live_server: LiveServer, fake_stripe: FakeStripe
):
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as http:
        api = Api(client=http, admin=await live_server.admin_key())
        org = await api.make_org(tax_rate_bps=500)
        draft = await draft_in(api, org, "CAD")
        fake_stripe.fail("customer", "refuse")
        failed = ok(await http.post(f"/v1/invoices/{draft['id']}/issue", headers=api.admin))
        assert failed["stripe_sync_status"] == "failed"
        fake_stripe.clear_faults()
        answers = await asyncio.gather(
            *(
                http.post(f"/v1/invoices/{draft['id']}/stripe-sync", headers=api.admin)
                for _ in range(6)
            )
        )
        assert {ok(a)["stripe_sync_status"] for a in answers} <= {"synced", "pending"}
        final = ok(await http.get(f"/v1/invoices/{draft['id']}", headers=api.admin))
    assert final["stripe_sync_status"] == "synced"
    (stripe_invoice,) = fake_stripe.invoices_of(draft["id"])
    assert stripe_invoice["sent"] == 1
    items = fake_stripe.items_of(stripe_invoice["id"])
    assert sorted(i["amount"] for i in items) == sorted(
        [line["amount_cents"] for line in final["lines"]] + [final["tax_cents"]]
    )
    assert len(fake_stripe.customers_of(org["id"])) == 1


def open_transactions_and_row_lock(database_url: str, invoice_id: str) -> tuple[int, bool]:
    """Sessions idle inside a transaction, and whether the invoice row can be locked now."""
    with psycopg.connect(database_url) as conn:
        idle = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
        ).fetchone()
        try:
            conn.execute(
                "SELECT id FROM invoices WHERE id = %s FOR UPDATE NOWAIT", (invoice_id,)
            ).fetchone()
            lockable = True
        except psycopg.errors.LockNotAvailable:
            lockable = False
        conn.rollback()
    return (int(idle[0]) if idle else -1), lockable


async def test_no_transaction_is_open_while_stripe_is_being_called(
    live_server: LiveServer, fake_stripe: FakeStripe, database_url: str
):
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as http:
        api = Api(client=http, admin=await live_server.admin_key())
        org = await api.make_org(tax_rate_bps=500)
        draft = await draft_in(api, org, "CAD")
        fake_stripe.fail("finalize", "stall", seconds=1.5, times=1)
        issuing = asyncio.create_task(
            http.post(f"/v1/invoices/{draft['id']}/issue", headers=api.admin)
        )
        deadline = time.monotonic() + 20
        while not fake_stripe.writes(r"/v1/invoices/in_\w+/finalize"):
            assert time.monotonic() < deadline, "the push never reached finalize"
            await asyncio.sleep(0.02)
        during = await asyncio.to_thread(open_transactions_and_row_lock, database_url, draft["id"])
        issued = ok(await issuing)
    assert during == (0, True)
    assert issued["stripe_sync_status"] == "synced"
