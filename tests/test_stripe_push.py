"""Issued invoices reach Stripe exactly once, whatever fails on the way, against a fake Stripe."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker

from models.billing import Invoice
from service.app import create_app
from service.core.settings import Settings
from service.integrations import stripe_api, stripe_sync
from tests.billing_support import complete, delivered_program, period, run
from tests.fake_stripe import FakeStripe, stripe_fixtures
from tests.support import Api, ok, problem

stripe_server, fake_stripe, settings = stripe_fixtures()


async def billed_draft(api: Api, **org_fields: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """An organization (5% GST) and its draft: three delivered sessions at $100.01."""
    org = await api.make_org(tax_rate_bps=500, **org_fields)
    _, sessions = await delivered_program(api, org, rate_cents=10001, sessions=3)
    for session in sessions:
        await complete(api, session)
    (draft,) = await run(api, *period(), organization_id=org["id"])
    return org, draft


async def issue(api: Api, invoice_id: str) -> dict[str, Any]:
    return ok(await api.client.post(f"/v1/invoices/{invoice_id}/issue", headers=api.admin))


async def resume(api: Api, invoice_id: str) -> dict[str, Any]:
    return ok(await api.client.post(f"/v1/invoices/{invoice_id}/stripe-sync", headers=api.admin))


def assert_stripe_holds_exactly(fake: FakeStripe, org: dict[str, Any], invoice: dict[str, Any]):
    """One customer, one invoice with one item per line and one for tax, our total to the cent,
    finalized and emailed once; every write under a key derived from our ids."""
    assert len(fake.customers_of(org["id"])) == 1
    (stripe_invoice,) = fake.invoices_of(invoice["id"])
    customer = fake.customers_of(org["id"])[0]
    assert stripe_invoice["customer"] == customer["id"]
    assert stripe_invoice["id"] == invoice["stripe_invoice_id"]
    items = fake.items_of(stripe_invoice["id"])
    wanted = {line["id"]: line["amount_cents"] for line in invoice["lines"]}
    wanted["tax"] = invoice["tax_cents"]
    assert {i["metadata"]["ensemble_item"]: i["amount"] for i in items} == wanted
    assert len(items) == len(wanted)
    assert sum(i["amount"] for i in items) == invoice["total_cents"]
    assert (stripe_invoice["status"], stripe_invoice["sent"]) == ("open", 1)
    assert stripe_invoice["collection_method"] == "send_invoice"
    assert stripe_invoice["metadata"]["ensemble_invoice_number"] == invoice["number"]
    assert invoice["hosted_invoice_url"] == stripe_invoice["hosted_invoice_url"]
    assert all(
        r.idempotency_key and r.idempotency_key.startswith("ensemble:") for r in fake.writes(".*")
    )


async def test_issuing_pushes_one_customer_and_one_invoice_whose_items_add_up_to_ours(
    api: Api, fake_stripe: FakeStripe
):
    org, draft = await billed_draft(api, payment_terms_days=15)
    issued = await issue(api, draft["id"])
    assert (issued["status"], issued["stripe_sync_status"]) == ("open", "synced")
    assert (issued["subtotal_cents"], issued["tax_cents"], issued["total_cents"]) == (
        30003,
        1500,
        31503,
    )
    assert_stripe_holds_exactly(fake_stripe, org, issued)
    (stripe_invoice,) = fake_stripe.invoices_of(issued["id"])
    assert (stripe_invoice["currency"], stripe_invoice["days_until_due"]) == ("cad", 15)
    prefix = f"ensemble:invoice:{issued['id']}"
    assert [r.idempotency_key for r in fake_stripe.writes(".*")] == [
        f"ensemble:organization:{org['id']}:customer",
        f"{prefix}:create",
        *(f"{prefix}:line:{line['id']}" for line in issued["lines"]),
        f"{prefix}:tax",
        f"{prefix}:finalize",
        f"{prefix}:send",
    ]
    audit = ok(
        await api.client.get(f"/v1/audit-events?entity_id={issued['id']}", headers=api.admin)
    )
    synced = [e for e in audit["data"] if e["action"] == "invoice.stripe_synced"]
    assert [e["after"]["stripe_invoice_id"] for e in synced] == [stripe_invoice["id"]]


async def test_a_second_invoice_of_the_organization_reuses_its_stripe_customer(
    api: Api, fake_stripe: FakeStripe
):
    org, draft = await billed_draft(api)
    await issue(api, draft["id"])
    _, sessions = await delivered_program(api, org, currency="USD", sessions=1)
    await complete(api, sessions[0])
    (usd_draft,) = [d for d in await run(api, *period()) if d["currency"] == "USD"]
    second = await issue(api, usd_draft["id"])
    assert second["stripe_sync_status"] == "synced"
    assert len(fake_stripe.customers_of(org["id"])) == 1
    assert len(fake_stripe.writes(r"/v1/customers")) == 1
    assert fake_stripe.invoices_of(second["id"])[0]["currency"] == "usd"


STEP_FAILURES = [
    ("customer_search", "refuse"),
    ("customer", "refuse"),
    ("customer", "hang_up"),
    ("invoice_list", "refuse"),
    ("invoice", "refuse"),
    ("invoice", "hang_up"),
    ("items_list", "refuse"),
    ("line", "refuse"),
    ("line", "hang_up"),
    ("tax", "refuse"),
    ("tax", "hang_up"),
    ("finalize", "refuse"),
    ("finalize", "hang_up"),
    ("send", "refuse"),
    ("send", "hang_up"),
]


@pytest.mark.parametrize(("step", "mode"), STEP_FAILURES)
async def test_a_push_that_fails_at_any_step_resumes_without_duplicates(
    api: Api, fake_stripe: FakeStripe, step: str, mode: str, db
):
    org, draft = await billed_draft(api)
    # A second invoice already pushed makes the lookups find something that is not ours.
    if step in ("invoice_list", "invoice"):
        _, sessions = await delivered_program(api, org, currency="USD", sessions=1)
        await complete(api, sessions[0])
        (usd,) = [d for d in await run(api, *period()) if d["currency"] == "USD"]
        await issue(api, usd["id"])
    fake_stripe.fail(step, mode)  # type: ignore[arg-type]
    failed = await issue(api, draft["id"])
    assert (failed["status"], failed["stripe_sync_status"]) == ("open", "failed")
    assert failed["number"] is not None
    # The scheduler backs off after a failure (a minute after the first), then resumes it.
    assert await stripe_sync.invoices_to_resume(db) == []
    backing_off = await db.get(Invoice, uuid.UUID(failed["id"]))
    await db.refresh(backing_off)
    assert backing_off.stripe_sync_failures == 1
    wait = backing_off.stripe_sync_retry_at - datetime.now(UTC)
    assert timedelta(seconds=50) < wait <= timedelta(minutes=1)
    # (now() is the test transaction's start, so step well before it)
    backing_off.stripe_sync_retry_at = datetime.now(UTC) - timedelta(hours=1)
    await db.flush()
    assert await stripe_sync.invoices_to_resume(db) == [uuid.UUID(failed["id"])]
    audit = ok(
        await api.client.get(f"/v1/audit-events?entity_id={failed['id']}", headers=api.admin)
    )
    (failure,) = [e for e in audit["data"] if e["action"] == "invoice.stripe_sync_failed"]
    assert failure["after"]["error"]

    fake_stripe.clear_faults()
    resumed = await resume(api, draft["id"])
    assert resumed["stripe_sync_status"] == "synced"
    assert_stripe_holds_exactly(fake_stripe, org, resumed)
    assert await stripe_sync.invoices_to_resume(db) == []
    again = await resume(api, draft["id"])  # nothing left to do: nothing is sent again
    assert again["stripe_sync_status"] == "synced"
    assert_stripe_holds_exactly(fake_stripe, org, again)


@pytest.mark.parametrize("step", ["customer", "invoice", "line", "tax", "finalize", "send"])
async def test_a_resume_after_stripe_forgot_the_keys_still_finds_what_lost_answers_created(
    api: Api, fake_stripe: FakeStripe, step: str
):
    org, draft = await billed_draft(api)
    fake_stripe.fail(step, "hang_up")
    assert (await issue(api, draft["id"]))["stripe_sync_status"] == "failed"
    fake_stripe.clear_faults()
    fake_stripe.forget_idempotency_keys()  # a day later
    resumed = await resume(api, draft["id"])
    assert resumed["stripe_sync_status"] == "synced"
    if step == "send":  # an email cannot be looked up: past 24 hours, it may go out twice
        (stripe_invoice,) = fake_stripe.invoices_of(draft["id"])
        assert stripe_invoice["sent"] == 2
        stripe_invoice["sent"] = 1
    assert_stripe_holds_exactly(fake_stripe, org, resumed)


async def test_an_organization_renamed_between_attempts_still_gets_one_customer(
    api: Api, fake_stripe: FakeStripe
):
    org, draft = await billed_draft(api)
    fake_stripe.fail("customer", "refuse")
    assert (await issue(api, draft["id"]))["stripe_sync_status"] == "failed"
    fake_stripe.clear_faults()
    renamed = {"name": "Renamed school"}
    ok(await api.client.patch(f"/v1/organizations/{org['id']}", json=renamed, headers=api.admin))
    resumed = await resume(api, draft["id"])  # the first key now meets other parameters
    assert resumed["stripe_sync_status"] == "synced"
    assert_stripe_holds_exactly(fake_stripe, org, resumed)
    assert fake_stripe.customers_of(org["id"])[0]["name"] == "Renamed school"
    key = f"ensemble:organization:{org['id']}:customer"
    assert [(r.idempotency_key, r.status) for r in fake_stripe.writes(r"/v1/customers")] == [
        (key, 500),  # refused, and saved under the key
        (key, 400),  # idempotency_error: the key was first used with the old name
        (f"{key}:2", 200),
    ]


async def test_a_retried_issue_replays_the_answer_that_includes_the_push(
    api: Api, fake_stripe: FakeStripe
):
    _, draft = await billed_draft(api)
    headers = {**api.admin, "Idempotency-Key": "issue-once"}
    url = f"/v1/invoices/{draft['id']}/issue"
    first = await api.client.post(url, headers=headers)
    again = await api.client.post(url, headers=headers)
    assert ok(first)["stripe_sync_status"] == "synced"
    assert again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    assert len(fake_stripe.invoices_of(draft["id"])) == 1


async def test_a_dropped_answer_is_replayed_by_retrying_the_same_key_within_the_push(
    api: Api, fake_stripe: FakeStripe
):
    org, draft = await billed_draft(api)
    fake_stripe.fail("invoice", "hang_up", times=1)
    issued = await issue(api, draft["id"])
    assert issued["stripe_sync_status"] == "synced"
    assert_stripe_holds_exactly(fake_stripe, org, issued)
    creates = fake_stripe.writes(r"/v1/invoices")
    assert [(r.idempotency_key, r.status, r.replayed) for r in creates] == [
        (f"ensemble:invoice:{issued['id']}:create", None, False),
        (f"ensemble:invoice:{issued['id']}:create", 200, True),
    ]


async def test_a_timed_out_call_fails_the_push_and_a_resume_finds_what_stripe_did(
    api: Api, fake_stripe: FakeStripe, settings: Settings, connection: AsyncConnection
):
    org, draft = await billed_draft(api)
    fake_stripe.fail("customer", "refuse")
    assert (await issue(api, draft["id"]))["stripe_sync_status"] == "failed"
    fake_stripe.clear_faults()
    fake_stripe.fail("finalize", "stall", seconds=1.5)
    impatient = stripe_api.make_client(settings, timeout=httpx.Timeout(0.3), max_network_retries=0)
    assert impatient is not None
    factory = async_sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    invoice_id = uuid.UUID(draft["id"])
    status = await stripe_sync.sync_invoice(
        factory, impatient, invoice_id, provider_zone=settings.timezone
    )
    assert status == "failed"
    fake_stripe.clear_faults()
    assert fake_stripe.invoices_of(draft["id"])[0]["status"] == "open"  # Stripe did finalize
    finalize = r"/v1/invoices/in_\w+/finalize"
    # The probe timed out; each retry under the same key found it still in flight (409
    # idempotency_key_in_use: nothing done, nothing saved) until the attempts ran out.
    tries = stripe_api.MAX_ATTEMPTS
    assert [(r.status, r.replayed) for r in fake_stripe.writes(finalize)] == [(200, False)] + [
        (409, False)
    ] * (tries - 1)
    assert {r.idempotency_key for r in fake_stripe.writes(finalize)} == {
        f"ensemble:invoice:{draft['id']}:finalize"
    }
    resumed = await resume(api, draft["id"])
    assert resumed["stripe_sync_status"] == "synced"
    assert_stripe_holds_exactly(fake_stripe, org, resumed)
    assert len(fake_stripe.writes(finalize)) == tries  # the resume saw it finalized: no new call


async def test_voiding_an_issued_invoice_voids_it_in_stripe(api: Api, fake_stripe: FakeStripe):
    _, draft = await billed_draft(api)
    issued = await issue(api, draft["id"])
    voided = ok(
        await api.client.post(
            f"/v1/invoices/{draft['id']}/void", headers=api.admin, json={"reason": "Wrong rate"}
        )
    )
    assert (voided["status"], voided["stripe_sync_status"]) == ("void", "synced")
    (stripe_invoice,) = fake_stripe.invoices_of(issued["id"])
    assert stripe_invoice["status"] == "void"
    (void_call,) = fake_stripe.writes(r"/v1/invoices/in_\w+/void")
    assert void_call.idempotency_key == f"ensemble:invoice:{issued['id']}:void"


async def test_voiding_an_invoice_whose_push_stopped_at_a_stripe_draft_deletes_the_draft(
    api: Api, fake_stripe: FakeStripe
):
    _, draft = await billed_draft(api)
    fake_stripe.fail("finalize", "refuse")
    assert (await issue(api, draft["id"]))["stripe_sync_status"] == "failed"
    assert fake_stripe.invoices_of(draft["id"])[0]["status"] == "draft"
    fake_stripe.clear_faults()
    voided = ok(await api.client.post(f"/v1/invoices/{draft['id']}/void", headers=api.admin))
    assert (voided["status"], voided["stripe_sync_status"]) == ("void", "synced")
    assert fake_stripe.invoices_of(draft["id"]) == []


async def test_an_invoice_paid_before_its_push_resumed_is_marked_paid_in_stripe_not_sent(
    api: Api, fake_stripe: FakeStripe
):
    org, draft = await billed_draft(api)
    fake_stripe.fail("finalize", "refuse")
    failed = await issue(api, draft["id"])
    fake_stripe.clear_faults()
    paid = ok(
        await api.client.post(
            f"/v1/invoices/{draft['id']}/payments",
            headers=api.admin,
            json={"amount_cents": failed["total_cents"], "method": "cheque"},
        ),
        201,
    )
    assert paid["status"] == "paid"
    resumed = await resume(api, draft["id"])
    assert (resumed["status"], resumed["stripe_sync_status"]) == ("paid", "synced")
    (stripe_invoice,) = fake_stripe.invoices_of(draft["id"])
    assert (stripe_invoice["status"], stripe_invoice["sent"]) == ("paid", 0)
    assert len(fake_stripe.customers_of(org["id"])) == 1


async def test_without_stripe_invoices_are_issued_unsynced_and_can_be_pushed_later(
    api: Api,
    fake_stripe: FakeStripe,
    settings: Settings,
    engine: AsyncEngine,
    connection: AsyncConnection,
):
    factory = async_sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    plain = settings.model_copy(update={"stripe_api_key": None, "stripe_webhook_secret": None})
    app = create_app(plain, engine=engine, session_factory=factory)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://ensemble.test") as http:
        org, draft = await billed_draft(api)
        issued = ok(await http.post(f"/v1/invoices/{draft['id']}/issue", headers=api.admin))
        assert issued["stripe_sync_status"] == "disabled"
        problem(await http.post(f"/v1/invoices/{draft['id']}/stripe-sync", headers=api.admin), 409)
        problem(await http.post("/v1/integrations/stripe/webhook", content=b"{}"), 503)
    assert fake_stripe.requests == []
    pushed = await resume(api, draft["id"])  # once Stripe is configured
    assert pushed["stripe_sync_status"] == "synced"
    assert_stripe_holds_exactly(fake_stripe, org, pushed)


async def test_only_finance_may_push_and_a_draft_cannot_be(api: Api, fake_stripe: FakeStripe):
    org, draft = await billed_draft(api)
    problem(
        await api.client.post(f"/v1/invoices/{draft['id']}/stripe-sync", headers=api.admin), 409
    )
    await issue(api, draft["id"])
    coordinator = await api.coordinator(org["id"])
    stranger = await api.coordinator((await api.make_org())["id"])
    url = f"/v1/invoices/{draft['id']}/stripe-sync"
    problem(await api.client.post(url, headers=coordinator), 403)
    problem(await api.client.post(url, headers=stranger), 404)
