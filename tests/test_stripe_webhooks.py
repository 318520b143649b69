"""Stripe's webhooks, signed as Stripe signs them: late, repeated, forged and foreign events."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.billing_support import complete, delivered_program, period, run
from tests.fake_stripe import WEBHOOK_SECRET, FakeStripe, stripe_fixtures
from tests.support import Api, ok, problem

stripe_server, fake_stripe, settings = stripe_fixtures()
WEBHOOK = "/v1/integrations/stripe/webhook"


def signed(
    event: dict[str, Any], *, secret: str = WEBHOOK_SECRET, at: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """The payload and a Stripe-Signature header: t=<unix>,v1=HMAC-SHA256("<t>.<payload>")."""
    payload = json.dumps(event).encode()
    stamp = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + payload, hashlib.sha256)
    return payload, {
        "Stripe-Signature": f"t={stamp},v1={digest.hexdigest()}",
        "Content-Type": "application/json",
    }


def invoice_event(kind: str, invoice: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A Stripe event about the Stripe invoice our `invoice` was pushed to."""
    paid_at = int(time.time()) - 60
    obj = {
        "id": invoice["stripe_invoice_id"],
        "object": "invoice",
        "status": kind.removeprefix("invoice."),
        "currency": invoice["currency"].lower(),
        "total": invoice["total_cents"],
        "amount_paid": invoice["total_cents"] if kind == "invoice.paid" else 0,
        "metadata": {"ensemble_invoice_id": invoice["id"]},
        "status_transitions": {"paid_at": paid_at if kind == "invoice.paid" else None},
        **fields,
    }
    return {
        "id": f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "type": kind,
        "created": int(time.time()),
        "livemode": False,
        "data": {"object": obj},
    }


async def deliver(api: Api, event: dict[str, Any], **signing: Any) -> httpx.Response:
    payload, headers = signed(event, **signing)
    return await api.client.post(WEBHOOK, content=payload, headers=headers)


async def pushed_invoice(api: Api) -> dict[str, Any]:
    org = await api.make_org(tax_rate_bps=500)
    _, sessions = await delivered_program(api, org, rate_cents=12345, sessions=2)
    for session in sessions:
        await complete(api, session)
    (draft,) = await run(api, *period(), organization_id=org["id"])
    issued = ok(await api.client.post(f"/v1/invoices/{draft['id']}/issue", headers=api.admin))
    assert issued["stripe_sync_status"] == "synced"
    return issued


async def current(api: Api, invoice: dict[str, Any]) -> dict[str, Any]:
    return ok(await api.client.get(f"/v1/invoices/{invoice['id']}", headers=api.admin))


async def handled_events(db: AsyncSession) -> int:
    return int((await db.execute(text("SELECT count(*) FROM stripe_events"))).scalar_one())


async def test_a_forged_tampered_or_unsigned_event_is_400_and_changes_nothing(
    api: Api, fake_stripe: FakeStripe, db: AsyncSession
):
    invoice = await pushed_invoice(api)
    event = invoice_event("invoice.paid", invoice)
    problem(await deliver(api, event, secret="whsec_not_ours"), 400)
    payload, headers = signed(event)
    tampered = payload.replace(b'"amount_paid": ', b'"amount_paid": 1')
    problem(await api.client.post(WEBHOOK, content=tampered, headers=headers), 400)
    problem(await api.client.post(WEBHOOK, content=payload), 400)
    problem(await api.client.post(WEBHOOK, content=payload, headers={"Stripe-Signature": "x"}), 400)
    after = await current(api, invoice)
    assert (after["status"], after["payments"]) == ("open", [])
    assert await handled_events(db) == 0


async def test_a_signature_older_than_five_minutes_is_refused(api: Api, fake_stripe: FakeStripe):
    invoice = await pushed_invoice(api)
    event = invoice_event("invoice.payment_failed", invoice)
    problem(await deliver(api, event, at=int(time.time()) - 301), 400)
    assert ok(await deliver(api, event, at=int(time.time()) - 240))["outcome"] == "audited"


async def test_a_signed_payload_that_is_not_an_event_is_400(api: Api, fake_stripe: FakeStripe):
    for body in (b"not json", b"[1, 2]", b'{"id": "evt_1"}'):
        stamp = int(time.time())
        digest = hmac.new(WEBHOOK_SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
        headers = {"Stripe-Signature": f"t={stamp},v1={digest.hexdigest()}"}
        problem(await api.client.post(WEBHOOK, content=body, headers=headers), 400)


async def test_invoice_paid_records_a_stripe_payment_and_settles_our_invoice(
    api: Api, fake_stripe: FakeStripe
):
    invoice = await pushed_invoice(api)
    event = invoice_event("invoice.paid", invoice)
    answer = ok(await deliver(api, event))
    assert answer == {"received": True, "duplicate": False, "outcome": "payment_recorded"}
    paid = await current(api, invoice)
    assert (paid["status"], paid["amount_due_cents"]) == ("paid", 0)
    (payment,) = paid["payments"]
    assert (payment["amount_cents"], payment["method"], payment["reference"]) == (
        invoice["total_cents"],
        "stripe",
        invoice["stripe_invoice_id"],
    )
    paid_at = event["data"]["object"]["status_transitions"]["paid_at"]
    assert payment["paid_at"].startswith(time.strftime("%Y-%m-%dT%H:%M", time.gmtime(paid_at)))
    audit = ok(
        await api.client.get(f"/v1/audit-events?entity_id={invoice['id']}", headers=api.admin)
    )
    actions = [e["action"] for e in audit["data"]]
    assert "invoice.payment_recorded" in actions and "stripe.invoice.paid" in actions


async def test_stripe_pays_only_what_is_still_due_after_a_payment_we_recorded(
    api: Api, fake_stripe: FakeStripe
):
    invoice = await pushed_invoice(api)
    ok(
        await api.client.post(
            f"/v1/invoices/{invoice['id']}/payments",
            headers=api.admin,
            json={"amount_cents": 1000, "method": "cheque"},
        ),
        201,
    )
    # Stripe's invoice still asked for the whole total (a partial payment is not mirrored):
    # what was still due settles ours, the 10.00 paid twice is an overpayment.
    answer = ok(await deliver(api, invoice_event("invoice.paid", invoice)))
    assert answer["outcome"] == "overpayment_recorded"
    paid = await current(api, invoice)
    assert [(p["amount_cents"], p["method"], p["overpayment"]) for p in paid["payments"]] == [
        (1000, "cheque", False),
        (invoice["total_cents"] - 1000, "stripe", False),
        (1000, "stripe", True),
    ]
    assert (paid["status"], paid["amount_paid_cents"], paid["overpaid_cents"]) == (
        "paid",
        invoice["total_cents"],
        1000,
    )
    assert paid["amount_due_cents"] == 0


async def test_the_same_event_delivered_twice_is_handled_once(
    api: Api, fake_stripe: FakeStripe, db: AsyncSession
):
    invoice = await pushed_invoice(api)
    event = invoice_event("invoice.paid", invoice)
    assert ok(await deliver(api, event))["duplicate"] is False
    assert ok(await deliver(api, event)) == {
        "received": True,
        "duplicate": True,
        "outcome": "already_handled",
    }
    resent = invoice_event("invoice.paid", invoice)  # a new event id about the same payment
    assert ok(await deliver(api, resent))["outcome"] == "already_paid"
    assert len((await current(api, invoice))["payments"]) == 1
    assert await handled_events(db) == 2


async def test_a_late_voided_event_never_moves_a_paid_invoice_back(
    api: Api, fake_stripe: FakeStripe
):
    invoice = await pushed_invoice(api)
    ok(await deliver(api, invoice_event("invoice.paid", invoice)))
    late = ok(await deliver(api, invoice_event("invoice.voided", invoice)))
    assert late["outcome"] == "unchanged_invoice_paid"
    assert (await current(api, invoice))["status"] == "paid"


async def test_invoice_voided_voids_an_open_unpaid_invoice_and_frees_its_sessions(
    api: Api, fake_stripe: FakeStripe
):
    invoice = await pushed_invoice(api)
    assert ok(await deliver(api, invoice_event("invoice.voided", invoice)))["outcome"] == "voided"
    voided = await current(api, invoice)
    assert (voided["status"], voided["stripe_sync_status"]) == ("void", "synced")
    assert voided["void_reason"] == "Voided in Stripe"
    session = ok(
        await api.client.get(f"/v1/sessions/{invoice['lines'][0]['session_id']}", headers=api.admin)
    )
    assert session["invoice_id"] is None
    assert fake_stripe.writes(r"/v1/invoices/in_\w+/void") == []  # Stripe voided it already


async def test_payment_failures_and_uncollectible_invoices_are_audited_and_change_nothing(
    api: Api, fake_stripe: FakeStripe
):
    invoice = await pushed_invoice(api)
    for kind in ("invoice.payment_failed", "invoice.marked_uncollectible"):
        assert ok(await deliver(api, invoice_event(kind, invoice)))["outcome"] == "audited"
    after = await current(api, invoice)
    assert (after["status"], after["amount_due_cents"]) == ("open", invoice["total_cents"])
    audit = ok(
        await api.client.get(f"/v1/audit-events?entity_id={invoice['id']}", headers=api.admin)
    )
    stripe_actions = [e["action"] for e in audit["data"] if e["action"].startswith("stripe.")]
    assert sorted(stripe_actions) == [
        "stripe.invoice.marked_uncollectible",
        "stripe.invoice.payment_failed",
    ]


async def test_unknown_events_and_invoices_that_are_not_ours_are_acknowledged(
    api: Api, fake_stripe: FakeStripe, db: AsyncSession
):
    invoice = await pushed_invoice(api)
    unknown = {
        "id": "evt_unknown_kind",
        "object": "event",
        "type": "customer.created",
        "data": {"object": {"id": "cus_x", "object": "customer"}},
    }
    assert ok(await deliver(api, unknown))["outcome"] == "ignored"
    foreign = invoice_event(
        "invoice.paid",
        invoice,
        id="in_someone_elses",
        metadata={"ensemble_invoice_id": "not-a-uuid"},
    )
    assert ok(await deliver(api, foreign))["outcome"] == "not_ours"
    elsewhere = invoice_event(
        "invoice.paid", invoice, id="in_other", metadata={"ensemble_invoice_id": invoice["id"]}
    )
    assert ok(await deliver(api, elsewhere))["outcome"] == "not_ours"  # ours went to another id
    assert (await current(api, invoice))["payments"] == []
    assert await handled_events(db) == 3
