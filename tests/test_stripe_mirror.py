"""Every money event reaches Stripe, exactly once through failures: a payment that settles an
invoice (paid out of band), a credit note, a void; and money a customer paid in Stripe for an
invoice already settled here is recorded as an overpayment, never ignored."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from models.billing import Invoice
from service.core.settings import Settings
from service.integrations import stripe_api, stripe_sync
from tests.billing_support import complete, delivered_program, period, run
from tests.fake_stripe import FakeStripe, Fault, stripe_fixtures
from tests.support import Api, ok
from tests.test_stripe_webhooks import deliver, invoice_event

stripe_server, fake_stripe, settings = stripe_fixtures()

PAY = r"/v1/invoices/in_\w+/pay"
CREDIT_NOTES = r"/v1/credit_notes"


async def pushed(api: Api) -> dict[str, Any]:
    """An issued invoice pushed to Stripe: two sessions at $123.45 and 5% tax = $259.25."""
    org = await api.make_org(tax_rate_bps=500)
    _, sessions = await delivered_program(api, org, rate_cents=12345, sessions=2)
    for session in sessions:
        await complete(api, session)
    (draft,) = await run(api, *period(), organization_id=org["id"])
    issued = ok(await api.client.post(f"/v1/invoices/{draft['id']}/issue", headers=api.admin))
    assert (issued["total_cents"], issued["stripe_sync_status"]) == (25925, "synced")
    return issued


async def pay(api: Api, invoice: dict[str, Any], cents: int) -> dict[str, Any]:
    body = {"amount_cents": cents, "method": "bank_transfer", "reference": "EFT 7"}
    return ok(
        await api.client.post(
            f"/v1/invoices/{invoice['id']}/payments", json=body, headers=api.admin
        ),
        201,
    )


async def credit(api: Api, invoice: dict[str, Any], cents: int) -> dict[str, Any]:
    body = {"amount_cents": cents, "reason": "Session cut short"}
    return ok(
        await api.client.post(
            f"/v1/invoices/{invoice['id']}/credit-notes", json=body, headers=api.admin
        ),
        201,
    )


async def resume(api: Api, invoice: dict[str, Any]) -> dict[str, Any]:
    return ok(await api.client.post(f"/v1/invoices/{invoice['id']}/stripe-sync", headers=api.admin))


def stripe_invoice_of(fake: FakeStripe, invoice: dict[str, Any]) -> dict[str, Any]:
    (found,) = fake.invoices_of(invoice["id"])
    return fake._invoice(found["id"])[1]


async def test_a_payment_that_settles_marks_the_stripe_invoice_paid_out_of_band_once(
    api: Api, fake_stripe: FakeStripe
):
    invoice = await pushed(api)
    partial = await pay(api, invoice, 9925)
    # Stripe has no partial out-of-band payment: nothing is sent, nothing is pending.
    assert (partial["status"], partial["stripe_sync_status"]) == ("open", "synced")
    assert fake_stripe.writes(PAY) == []
    assert stripe_invoice_of(fake_stripe, invoice)["amount_remaining"] == 25925
    settled = await pay(api, invoice, 16000)
    assert (settled["status"], settled["stripe_sync_status"]) == ("paid", "synced")
    (call,) = fake_stripe.writes(PAY)
    assert call.idempotency_key == f"ensemble:invoice:{invoice['id']}:pay"
    assert call.params == {"paid_out_of_band": "true"}
    mirrored = stripe_invoice_of(fake_stripe, invoice)
    assert (mirrored["status"], mirrored["amount_paid"]) == ("paid", 25925)
    assert mirrored["sent"] == 1  # emailed when issued, never again
    again = await resume(api, invoice)
    assert again["stripe_sync_status"] == "synced"
    assert len(fake_stripe.writes(PAY)) == 1


async def test_a_credit_note_creates_its_stripe_credit_note_and_lowers_what_is_asked(
    api: Api, fake_stripe: FakeStripe
):
    invoice = await pushed(api)
    credited = await credit(api, invoice, 2500)
    assert (credited["amount_due_cents"], credited["stripe_sync_status"]) == (23425, "synced")
    stripe_invoice = stripe_invoice_of(fake_stripe, invoice)
    (note,) = fake_stripe.credit_notes_of(stripe_invoice["id"])
    (ours,) = credited["credit_notes"]
    assert (note["amount"], note["type"], note["memo"]) == (
        2500,
        "pre_payment",
        f"Credit note {ours['number']}",
    )
    assert note["metadata"] == {
        "ensemble_invoice_id": invoice["id"],
        "ensemble_credit_note_id": ours["id"],
        "ensemble_credit_note_number": ours["number"],
    }
    (call,) = fake_stripe.writes(CREDIT_NOTES)
    assert call.idempotency_key == f"ensemble:invoice:{invoice['id']}:credit_note:{ours['id']}"
    assert (stripe_invoice["status"], stripe_invoice["amount_remaining"]) == ("open", 23425)
    assert stripe_invoice["total"] == 25925  # Stripe keeps the total; credits lower what is due
    assert stripe_invoice["sent"] == 1


async def test_a_credit_note_that_settles_leaves_the_stripe_invoice_paid_by_it(
    api: Api, fake_stripe: FakeStripe
):
    invoice = await pushed(api)
    await credit(api, invoice, 5925)
    settled = await credit(api, invoice, 20000)
    assert (settled["status"], settled["stripe_sync_status"]) == ("paid", "synced")
    stripe_invoice = stripe_invoice_of(fake_stripe, invoice)
    notes = fake_stripe.credit_notes_of(stripe_invoice["id"])
    assert [n["amount"] for n in notes] == [5925, 20000]
    assert (stripe_invoice["status"], stripe_invoice["amount_remaining"]) == ("paid", 0)
    assert fake_stripe.writes(PAY) == []  # the credit notes paid it: nothing out of band


async def test_a_partial_payment_then_a_settling_credit_note_pays_the_rest_out_of_band(
    api: Api, fake_stripe: FakeStripe
):
    invoice = await pushed(api)
    await pay(api, invoice, 10000)
    settled = await credit(api, invoice, 15925)
    assert (settled["status"], settled["stripe_sync_status"]) == ("paid", "synced")
    stripe_invoice = stripe_invoice_of(fake_stripe, invoice)
    assert [n["amount"] for n in fake_stripe.credit_notes_of(stripe_invoice["id"])] == [15925]
    assert (stripe_invoice["status"], stripe_invoice["amount_paid"]) == ("paid", 10000)
    assert len(fake_stripe.writes(PAY)) == 1


FAILURES = [
    ("credit_note", "refuse"),  # a 500, saved by Stripe under the key
    ("credit_note", "hang_up"),
    ("credit_note_list", "refuse"),
    ("pay", "refuse"),
    ("pay", "hang_up"),
    ("void", "refuse"),
    ("void", "hang_up"),
]


@pytest.mark.parametrize(("step", "mode"), FAILURES)
async def test_a_mirror_that_fails_is_recorded_and_resumes_exactly_once(
    api: Api, fake_stripe: FakeStripe, db: AsyncSession, step: str, mode: str
):
    invoice = await pushed(api)
    fake_stripe.fail(step, mode)  # type: ignore[arg-type]
    if step == "void":
        failed = ok(await api.client.post(f"/v1/invoices/{invoice['id']}/void", headers=api.admin))
        wanted = ("void", "void")
    elif step == "pay":
        failed = await pay(api, invoice, 25925)
        wanted = ("paid", "paid")
    else:
        failed = await credit(api, invoice, 25925)
        wanted = ("paid", "paid")
    assert (failed["status"], failed["stripe_sync_status"]) == (wanted[0], "failed")
    stored = await db.get(Invoice, uuid.UUID(invoice["id"]))
    assert stored is not None
    await db.refresh(stored)
    assert stored.stripe_sync_failures == 1
    audit = ok(
        await api.client.get(f"/v1/audit-events?entity_id={invoice['id']}", headers=api.admin)
    )
    (failure,) = [e for e in audit["data"] if e["action"] == "invoice.stripe_sync_failed"]
    assert failure["after"]["failed_step"] == step.removesuffix("_list")

    fake_stripe.clear_faults()
    resumed = await resume(api, invoice)
    assert (resumed["status"], resumed["stripe_sync_status"]) == (wanted[0], "synced")
    stripe_invoice = stripe_invoice_of(fake_stripe, invoice)
    assert stripe_invoice["status"] == wanted[1]
    notes = fake_stripe.credit_notes_of(stripe_invoice["id"])
    assert [n["amount"] for n in notes] == ([25925] if step.startswith("credit") else [])
    assert stripe_invoice["sent"] == 1
    assert await stripe_sync.invoices_to_resume(db) == []


async def test_a_credit_note_whose_answer_was_lost_a_day_ago_is_found_not_duplicated(
    api: Api, fake_stripe: FakeStripe
):
    invoice = await pushed(api)
    fake_stripe.fail("credit_note", "hang_up")
    assert (await credit(api, invoice, 1000))["stripe_sync_status"] == "failed"
    fake_stripe.clear_faults()
    fake_stripe.forget_idempotency_keys()  # past Stripe's 24 hours the key would be new again
    assert (await resume(api, invoice))["stripe_sync_status"] == "synced"
    stripe_invoice = stripe_invoice_of(fake_stripe, invoice)
    assert [n["amount"] for n in fake_stripe.credit_notes_of(stripe_invoice["id"])] == [1000]


@pytest.mark.parametrize("mode", ["rate_limit", "conflict"])
async def test_a_busy_stripe_is_waited_out_under_the_same_key_within_the_push(
    api: Api, fake_stripe: FakeStripe, mode: str
):
    invoice = await pushed(api)
    fake_stripe.fail("credit_note", mode, times=2)  # type: ignore[arg-type]
    fake_stripe.fail("pay", mode, times=2)  # type: ignore[arg-type]
    fake_stripe.fail("credit_note_list", mode, times=2)  # type: ignore[arg-type]
    await pay(api, invoice, 925)
    settled = await credit(api, invoice, 25000)
    assert (settled["status"], settled["stripe_sync_status"]) == ("paid", "synced")
    busy = 429 if mode == "rate_limit" else 409
    for pattern in (CREDIT_NOTES, PAY):
        calls = fake_stripe.writes(pattern)
        assert [c.status for c in calls] == [busy, busy, 200]
        assert len({c.idempotency_key for c in calls}) == 1
    lists = [r.status for r in fake_stripe.requests if r.method == "GET" and r.path == CREDIT_NOTES]
    assert lists == [busy, busy, 200]
    stripe_invoice = stripe_invoice_of(fake_stripe, invoice)
    assert [n["amount"] for n in fake_stripe.credit_notes_of(stripe_invoice["id"])] == [25000]
    assert stripe_invoice["status"] == "paid"


async def test_a_rate_limit_past_the_deadline_fails_the_push_and_the_resume_completes_it(
    api: Api, fake_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch
):
    invoice = await pushed(api)
    fake_stripe.fail("pay", "rate_limit")  # every time, until cleared
    failed = await pay(api, invoice, 25925)
    assert failed["stripe_sync_status"] == "failed"
    assert [c.status for c in fake_stripe.writes(PAY)] == [429] * stripe_api.MAX_ATTEMPTS
    fake_stripe.clear_faults()
    assert (await resume(api, invoice))["stripe_sync_status"] == "synced"
    calls = fake_stripe.writes(PAY)
    assert calls[-1].status == 200 and len({c.idempotency_key for c in calls}) == 1
    assert stripe_invoice_of(fake_stripe, invoice)["status"] == "paid"


async def test_a_request_still_in_flight_is_waited_for_and_its_answer_replayed(
    api: Api,
    fake_stripe: FakeStripe,
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    connection: AsyncConnection,
):
    """The first call stalls past the client's timeout; the retries under the same key meet
    409 idempotency_key_in_use until Stripe has answered it, then get its answer replayed."""
    invoice = await pushed(api)
    fake_stripe.fail("pay", "conflict")
    assert (await pay(api, invoice, 25925))["stripe_sync_status"] == "failed"
    fake_stripe.clear_faults()
    earlier = len(fake_stripe.writes(PAY))
    fake_stripe.fail("pay", "stall", seconds=1.0, times=1)
    monkeypatch.setattr(stripe_api, "RETRY_FIRST", 0.2)
    monkeypatch.setattr(stripe_api, "RETRY_MAX", 0.2)
    monkeypatch.setattr(stripe_api, "MAX_ATTEMPTS", 40)
    impatient = stripe_api.make_client(settings, timeout=httpx.Timeout(0.3))
    assert impatient is not None
    factory = async_sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    status = await stripe_sync.sync_invoice(
        factory, impatient, uuid.UUID(invoice["id"]), provider_zone=settings.timezone
    )
    assert status == "synced"
    calls = fake_stripe.writes(PAY)[earlier:]
    statuses = [(c.status, c.replayed) for c in calls]
    assert statuses[0] == (200, False)
    assert statuses[-1] == (200, True)
    assert set(statuses[1:-1]) == {(409, False)}
    assert {c.idempotency_key for c in calls} == {f"ensemble:invoice:{invoice['id']}:pay"}
    assert stripe_invoice_of(fake_stripe, invoice)["status"] == "paid"


async def outbox(db: AsyncSession, invoice_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The invoice's events after `invoice.issued`, by type (one test transaction: no order)."""
    rows = await db.execute(
        text(
            "SELECT type, data FROM webhook_events "
            "WHERE data->>'id' = :id AND type <> 'invoice.issued' ORDER BY type"
        ),
        {"id": invoice_id},
    )
    return [(row.type, row.data) for row in rows]


async def test_stripe_paid_an_invoice_settled_here_the_overpayment_is_recorded_and_shown(
    api: Api, fake_stripe: FakeStripe, db: AsyncSession
):
    invoice = await pushed(api)
    # The bank transfer settles ours; Stripe is down, so its invoice stays open and the
    # customer pays it there too.
    fake_stripe.fail("pay", "refuse", status=503)
    settled = await pay(api, invoice, 25925)
    assert (settled["status"], settled["stripe_sync_status"]) == ("paid", "failed")
    fake_stripe.clear_faults()
    stripe_invoice = fake_stripe.invoices[invoice["stripe_invoice_id"]]
    stripe_invoice.update(status="paid", amount_paid=25925)
    event = invoice_event("invoice.paid", invoice)
    answer = ok(await deliver(api, event))
    assert answer == {"received": True, "duplicate": False, "outcome": "overpayment_recorded"}
    shown = ok(await api.client.get(f"/v1/invoices/{invoice['id']}", headers=api.admin))
    assert (shown["status"], shown["amount_paid_cents"], shown["overpaid_cents"]) == (
        "paid",
        25925,
        25925,
    )
    assert shown["amount_due_cents"] == 0
    assert [
        (p["amount_cents"], p["method"], p["overpayment"], p["reference"])
        for p in shown["payments"]
    ] == [
        (25925, "bank_transfer", False, "EFT 7"),
        (25925, "stripe", True, invoice["stripe_invoice_id"]),
    ]
    listed = ok(
        await api.client.get(
            f"/v1/invoices?organization_id={invoice['organization_id']}", headers=api.admin
        )
    )
    assert [i["overpaid_cents"] for i in listed["data"]] == [25925]
    # Emitted once, with the invoice as finance reads it; no second invoice.paid.
    events = await outbox(db, invoice["id"])
    assert [kind for kind, _ in events] == ["invoice.overpaid", "invoice.paid"]
    overpaid = events[0][1]
    assert (overpaid["overpaid_cents"], overpaid["amount_paid_cents"]) == (25925, 25925)
    assert overpaid["payments"][1]["overpayment"] is True
    # A second event about the same Stripe payment records nothing more.
    again = ok(await deliver(api, invoice_event("invoice.paid", invoice)))
    assert again["outcome"] == "already_paid"
    # The resume finds Stripe's invoice paid: nothing to mark out of band.
    resumed = await resume(api, invoice)
    assert (resumed["stripe_sync_status"], resumed["overpaid_cents"]) == ("synced", 25925)
    assert [c.status for c in fake_stripe.writes(PAY)] == [503]

    # The revenue report and the CSV export show it.
    start, end = period()
    report = ok(
        await api.client.get(f"/v1/reports/revenue?from={start}&to={end}", headers=api.admin)
    )
    (row,) = [r for r in report["data"] if r["organization_id"] == invoice["organization_id"]]
    assert (row["invoiced_cents"], row["paid_cents"], row["outstanding_cents"]) == (
        25925,
        25925,
        0,
    )
    assert row["overpaid_cents"] == 25925
    exported = await api.client.get(
        f"/v1/invoices/export.csv?from={start}&to={end}", headers=api.admin
    )
    rows = [r for r in csv.DictReader(io.StringIO(exported.text))]
    mine = [r for r in rows if r["invoice_number"] == invoice["number"]]
    assert [r["invoice_overpaid_cents"] for r in mine] == ["25925", "25925"]


@pytest.mark.parametrize("older_api", [False, True])
async def test_our_own_out_of_band_mirror_coming_back_records_nothing(
    api: Api, fake_stripe: FakeStripe, db: AsyncSession, older_api: bool
):
    invoice = await pushed(api)
    await pay(api, invoice, 20000)
    await pay(api, invoice, 5925)  # settles: Stripe's 259.25 is marked paid out of band
    mirrored = stripe_invoice_of(fake_stripe, invoice)
    assert mirrored["amount_paid"] == 25925
    # Before 2025-03-31.basil Stripe flagged it; since, amount_paid simply includes it.
    flag = {"paid_out_of_band": True, "amount_paid": 0} if older_api else {}
    event = invoice_event("invoice.paid", invoice, **flag)
    answer = ok(await deliver(api, event))
    assert answer["outcome"] == "not_recorded_paid_out_of_band"
    shown = ok(await api.client.get(f"/v1/invoices/{invoice['id']}", headers=api.admin))
    assert (shown["overpaid_cents"], len(shown["payments"])) == (0, 2)
    assert [kind for kind, _ in await outbox(db, invoice["id"])] == ["invoice.paid"]


async def test_stripe_refusing_the_out_of_band_mark_leaves_the_customers_payment_whole(
    api: Api, fake_stripe: FakeStripe
):
    """The customer pays in Stripe between our look and our mark: Stripe refuses the mark
    (the invoice is paid), so all of Stripe's amount_paid is the customer's: an overpayment."""
    invoice = await pushed(api)
    stripe_id = invoice["stripe_invoice_id"]

    def customer_pays_first(params: dict[str, Any]) -> bool:
        fake_stripe.invoices[stripe_id].update(status="paid", amount_paid=25925)
        return False

    fake_stripe.faults.append(Fault("POST", PAY, "refuse", where=customer_pays_first))
    settled = await pay(api, invoice, 25925)
    assert (settled["status"], settled["stripe_sync_status"]) == ("paid", "failed")
    fake_stripe.clear_faults()
    answer = ok(await deliver(api, invoice_event("invoice.paid", invoice)))
    assert answer["outcome"] == "overpayment_recorded"
    resumed = await resume(api, invoice)
    assert (resumed["stripe_sync_status"], resumed["overpaid_cents"]) == ("synced", 25925)
    assert [c.status for c in fake_stripe.writes(PAY)] == [400]


async def test_money_paid_in_stripe_for_an_invoice_voided_here_is_an_overpayment(
    api: Api, fake_stripe: FakeStripe
):
    invoice = await pushed(api)
    fake_stripe.fail("void", "refuse")  # the customer paid before the void reached Stripe
    voided = ok(await api.client.post(f"/v1/invoices/{invoice['id']}/void", headers=api.admin))
    assert (voided["status"], voided["stripe_sync_status"]) == ("void", "failed")
    answer = ok(await deliver(api, invoice_event("invoice.paid", invoice)))
    assert answer["outcome"] == "overpayment_recorded"
    shown = ok(await api.client.get(f"/v1/invoices/{invoice['id']}", headers=api.admin))
    assert (shown["status"], shown["amount_paid_cents"], shown["overpaid_cents"]) == (
        "void",
        0,
        25925,
    )


async def test_a_void_that_could_not_reach_stripe_is_voided_there_by_the_scheduler(
    api: Api,
    fake_stripe: FakeStripe,
    settings: Settings,
    connection: AsyncConnection,
    db: AsyncSession,
):
    """Every path that voids reaches Stripe: the route (after commit), Stripe's own
    `invoice.voided` (nothing to push), and the scheduler resuming a void that failed."""
    invoice = await pushed(api)
    fake_stripe.fail("void", "refuse", status=502)
    voided = ok(await api.client.post(f"/v1/invoices/{invoice['id']}/void", headers=api.admin))
    assert (voided["status"], voided["stripe_sync_status"]) == ("void", "failed")
    fake_stripe.clear_faults()
    await db.execute(
        text("UPDATE invoices SET stripe_sync_retry_at = now() - interval '1 hour' WHERE id = :id"),
        {"id": invoice["id"]},
    )
    due = await stripe_sync.invoices_to_resume(db)
    assert due == [uuid.UUID(invoice["id"])]
    client = stripe_api.make_client(settings)
    assert client is not None
    factory = async_sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    for invoice_id in due:  # what the stripe-sync job does with each
        status = await stripe_sync.sync_invoice(
            factory, client, invoice_id, provider_zone=settings.timezone
        )
        assert status == "synced"
    assert stripe_invoice_of(fake_stripe, invoice)["status"] == "void"
    key = f"ensemble:invoice:{invoice['id']}:void"
    calls = fake_stripe.writes(r"/v1/invoices/in_\w+/void")
    # Stripe saved the 502 under the key: the resume sees it replayed, then uses the next key.
    assert [(c.idempotency_key, c.status, c.replayed) for c in calls] == [
        (key, 502, False),
        (key, 502, True),
        (f"{key}:2", 200, False),
    ]


async def test_a_mark_whose_answer_was_lost_is_still_known_as_ours(
    api: Api, fake_stripe: FakeStripe
):
    """Stripe marked it paid out of band but every answer was lost: its `invoice.paid` is our
    own mirror coming back, not the customer's money."""
    invoice = await pushed(api)
    fake_stripe.fail("pay", "hang_up")
    settled = await pay(api, invoice, 25925)
    assert (settled["status"], settled["stripe_sync_status"]) == ("paid", "failed")
    assert stripe_invoice_of(fake_stripe, invoice)["status"] == "paid"  # Stripe did mark it
    answer = ok(await deliver(api, invoice_event("invoice.paid", invoice)))
    assert answer["outcome"] == "not_recorded_paid_out_of_band"
    fake_stripe.clear_faults()
    resumed = await resume(api, invoice)
    assert (resumed["stripe_sync_status"], resumed["overpaid_cents"]) == ("synced", 0)
    assert [p["amount_cents"] for p in resumed["payments"]] == [25925]


async def test_invoice_overpaid_carries_the_invoice_with_its_overpayment(
    api: Api, fake_stripe: FakeStripe, db: AsyncSession
):
    """The payload test of `invoice.overpaid` (tests/test_event_payloads.py counts it): the
    event's data is the invoice exactly as finance reads it afterwards."""
    invoice = await pushed(api)
    fake_stripe.fail("pay", "refuse", status=503)
    await pay(api, invoice, 25925)
    fake_stripe.clear_faults()
    fake_stripe.invoices[invoice["stripe_invoice_id"]].update(status="paid", amount_paid=25925)
    ok(await deliver(api, invoice_event("invoice.paid", invoice)))

    shown = ok(await api.client.get(f"/v1/invoices/{invoice['id']}", headers=api.admin))
    events = dict(await outbox(db, invoice["id"]))
    assert events["invoice.overpaid"] == shown
    assert (shown["overpaid_cents"], shown["amount_paid_cents"], shown["amount_due_cents"]) == (
        25925,
        25925,
        0,
    )
