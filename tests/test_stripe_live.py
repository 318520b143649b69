"""The push against Stripe itself, in test mode. Runs only when STRIPE_API_KEY holds a test-mode
key (never in CI here): `STRIPE_API_KEY=sk_test_... .venv/bin/pytest tests/test_stripe_live.py`.
It leaves a voided invoice, a paid credited one and deleted customers in the test account."""

from __future__ import annotations

import os
from typing import Any

import pytest
from pydantic import SecretStr

from service.core.settings import Settings
from service.integrations import stripe_api
from tests.billing_support import complete, delivered_program, period, run
from tests.support import Api, ok

KEY = os.environ.get("STRIPE_API_KEY", "")
pytestmark = pytest.mark.skipif(
    not KEY.startswith(("sk_test_", "rk_test_")),
    reason="set STRIPE_API_KEY to a Stripe test-mode key to run the live Stripe test",
)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "stripe_api_key": SecretStr(KEY),
            "stripe_api_base": os.environ.get("STRIPE_API_BASE", "https://api.stripe.com"),
        }
    )


async def test_an_issued_invoice_lands_in_stripe_test_mode_with_our_total_and_voids_there(
    api: Api, settings: Settings
):
    org = await api.make_org(tax_rate_bps=500, billing_email="ensemble-live-test@example.com")
    _, sessions = await delivered_program(api, org, rate_cents=10001, sessions=2)
    for session in sessions:
        await complete(api, session)
    (draft,) = await run(api, *period(), organization_id=org["id"])
    issued: dict[str, Any] = ok(
        await api.client.post(f"/v1/invoices/{draft['id']}/issue", headers=api.admin)
    )
    assert issued["stripe_sync_status"] == "synced", issued
    client = stripe_api.make_client(settings)
    assert client is not None
    stripe_invoice = await client.v1.invoices.retrieve_async(issued["stripe_invoice_id"])
    assert (stripe_invoice.status, stripe_invoice.total) == ("open", issued["total_cents"])
    assert stripe_invoice.hosted_invoice_url == issued["hosted_invoice_url"]
    items = await client.v1.invoice_items.list_async({"invoice": stripe_invoice.id})
    assert len(items.data) == len(issued["lines"]) + 1  # and one for the tax

    again = ok(await api.client.post(f"/v1/invoices/{draft['id']}/stripe-sync", headers=api.admin))
    assert again["stripe_invoice_id"] == issued["stripe_invoice_id"]
    voided = ok(await api.client.post(f"/v1/invoices/{draft['id']}/void", headers=api.admin))
    assert voided["stripe_sync_status"] == "synced"
    stripe_invoice = await client.v1.invoices.retrieve_async(issued["stripe_invoice_id"])
    assert stripe_invoice.status == "void"
    customer = stripe_invoice.customer
    assert customer is not None
    await client.v1.customers.delete_async(customer if isinstance(customer, str) else customer.id)


async def test_a_credit_note_and_a_settling_payment_are_mirrored_in_stripe_test_mode(
    api: Api, settings: Settings
):
    """A credit note becomes a Stripe credit note; the payment that settles the rest marks the
    Stripe invoice paid out of band; pushing again changes nothing."""
    org = await api.make_org(tax_rate_bps=500, billing_email="ensemble-live-test@example.com")
    _, sessions = await delivered_program(api, org, rate_cents=10001, sessions=2)
    for session in sessions:
        await complete(api, session)
    (draft,) = await run(api, *period(), organization_id=org["id"])
    issued: dict[str, Any] = ok(
        await api.client.post(f"/v1/invoices/{draft['id']}/issue", headers=api.admin)
    )
    assert issued["stripe_sync_status"] == "synced", issued
    credited = ok(
        await api.client.post(
            f"/v1/invoices/{draft['id']}/credit-notes",
            json={"amount_cents": 2500, "reason": "Live test credit"},
            headers=api.admin,
        ),
        201,
    )
    assert credited["stripe_sync_status"] == "synced", credited
    client = stripe_api.make_client(settings)
    assert client is not None
    notes = await client.v1.credit_notes.list_async({"invoice": issued["stripe_invoice_id"]})
    assert [(n.amount, n.to_dict()["metadata"]["ensemble_credit_note_id"]) for n in notes.data] == [
        (2500, credited["credit_notes"][0]["id"])
    ]
    stripe_invoice = await client.v1.invoices.retrieve_async(issued["stripe_invoice_id"])
    assert (stripe_invoice.status, stripe_invoice.amount_remaining) == (
        "open",
        issued["total_cents"] - 2500,
    )
    settled = ok(
        await api.client.post(
            f"/v1/invoices/{draft['id']}/payments",
            json={"amount_cents": credited["amount_due_cents"], "method": "bank_transfer"},
            headers=api.admin,
        ),
        201,
    )
    assert (settled["status"], settled["stripe_sync_status"]) == ("paid", "synced"), settled
    stripe_invoice = await client.v1.invoices.retrieve_async(issued["stripe_invoice_id"])
    # Since 2025-03-31.basil, amount_paid counts what was paid out of band.
    assert (stripe_invoice.status, stripe_invoice.amount_paid) == (
        "paid",
        issued["total_cents"] - 2500,
    )
    again = ok(await api.client.post(f"/v1/invoices/{draft['id']}/stripe-sync", headers=api.admin))
    assert again["stripe_sync_status"] == "synced"
    notes = await client.v1.credit_notes.list_async({"invoice": issued["stripe_invoice_id"]})
    assert len(notes.data) == 1
    customer = stripe_invoice.customer
    assert customer is not None
    await client.v1.customers.delete_async(customer if isinstance(customer, str) else customer.id)
