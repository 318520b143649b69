"""Tenant isolation, one promise at a time: invoices, invoice runs, the accounting export and
Stripe's webhook."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.billing_support import period
from tests.support import ok
from tests.tenant_isolation.world import World

# Billing. Admin and finance do everything; a coordinator reads their organization's issued
# invoices (drafts are the provider's work in progress: 404) and changes none (403); another
# organization's invoice is a 404, whatever the action. Therapists see no money: 403 throughout.


async def test_coordinator_lists_only_their_organizations_issued_invoices(world: World) -> None:
    client = world.api.client
    a, b = world.billing_a, world.billing_b
    everything = ok(await client.get("/v1/invoices", headers=world.api.admin))
    assert {a.issued["id"], a.draft["id"], b.issued["id"], b.draft["id"]} <= {
        i["id"] for i in everything["data"]
    }
    page = ok(await client.get("/v1/invoices", headers=world.coordinator_a))
    assert [i["id"] for i in page["data"]] == [a.issued["id"]]
    text = json.dumps(page)
    for marker in (
        a.draft["id"],
        b.issued["id"],
        b.issued["number"],
        b.draft["id"],
        world.org_b["id"],
        world.org_b["name"],
    ):
        assert marker not in text
    for query in (
        {"status": "draft"},
        {"organization_id": world.org_b["id"]},
        {"organization_id": world.org_b["id"], "status": "open"},
    ):
        response = await client.get("/v1/invoices", params=query, headers=world.coordinator_a)
        assert ok(response)["data"] == [], query


async def test_coordinator_reads_their_organizations_issued_invoice(world: World) -> None:
    issued = world.billing_a.issued
    got = ok(
        await world.api.client.get(f"/v1/invoices/{issued['id']}", headers=world.coordinator_a)
    )
    assert (got["id"], got["number"], got["organization_id"]) == (
        issued["id"],
        issued["number"],
        world.org_a["id"],
    )
    assert {line["session_id"] for line in got["lines"]} == {
        s["id"] for s in world.billing_a.sessions[:2]
    }


@pytest.mark.parametrize(
    "invoice", ["org B's issued invoice", "org B's draft", "org A's own draft"]
)
async def test_coordinator_gets_404_for_another_organizations_invoice_and_for_drafts(
    world: World, invoice: str
) -> None:
    target = {
        "org B's issued invoice": world.billing_b.issued,
        "org B's draft": world.billing_b.draft,
        "org A's own draft": world.billing_a.draft,
    }[invoice]
    response = await world.api.client.get(
        f"/v1/invoices/{target['id']}", headers=world.coordinator_a
    )
    assert response.status_code == 404, response.text
    assert world.org_b["name"] not in response.text
    assert world.billing_b.issued["number"] not in response.text
    assert "_cents" not in response.text


INVOICE_CHANGES = [
    ("POST", "/payments", {"amount_cents": 1, "method": "bank_transfer"}),
    ("POST", "/credit-notes", {"amount_cents": 1}),
    ("POST", "/void", {"reason": "not ours to void"}),
    ("POST", "/issue", None),
    ("DELETE", "", None),
]


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    INVOICE_CHANGES,
    ids=[s.lstrip("/") or "delete" for _, s, _ in INVOICE_CHANGES],
)
@pytest.mark.parametrize(("whose", "status"), [("billing_a", 403), ("billing_b", 404)])
async def test_coordinator_changes_no_invoice_and_nothing_is_recorded(
    world: World, method: str, suffix: str, body: Any, whose: str, status: int
) -> None:
    """Their own organization's issued invoice: 403 (a change is the provider's); another
    organization's: 404 (visibility before role). Re-read as admin, nothing moved."""
    client = world.api.client
    invoice = getattr(world, whose).issued
    before = ok(await client.get(f"/v1/invoices/{invoice['id']}", headers=world.api.admin))
    response = await client.request(
        method, f"/v1/invoices/{invoice['id']}{suffix}", json=body, headers=world.coordinator_a
    )
    assert response.status_code == status, response.text
    after = ok(await client.get(f"/v1/invoices/{invoice['id']}", headers=world.api.admin))
    assert after == before
    assert (after["status"], after["payments"], after["credit_notes"]) == ("open", [], [])
    assert after["amount_paid_cents"] == after["amount_credited_cents"] == 0


@pytest.mark.parametrize("caller", ["coordinator_a", "therapist_1_key"])
async def test_invoice_runs_and_the_export_are_refused_to_scoped_keys(
    world: World, caller: str
) -> None:
    client = world.api.client
    headers = getattr(world, caller)
    start, end = period()
    export = await client.get(
        "/v1/invoices/export.csv", params={"from": start, "to": end}, headers=headers
    )
    assert export.status_code == 403, export.text
    assert "invoice_number" not in export.text
    assert world.billing_a.issued["number"] not in export.text
    drafts_before = ok(
        await client.get("/v1/invoices", params={"status": "draft"}, headers=world.api.admin)
    )
    response = await client.post(
        "/v1/invoice-runs",
        json={"period_start": start, "period_end": end, "organization_id": world.org_a["id"]},
        headers=headers,
    )
    assert response.status_code == 403, response.text
    drafts_after = ok(
        await client.get("/v1/invoices", params={"status": "draft"}, headers=world.api.admin)
    )
    assert drafts_after == drafts_before


@pytest.mark.parametrize(
    "path",
    [
        "/v1/invoices",
        "/v1/invoices/{a_issued}",
        "/v1/invoices/{a_draft}",
        "/v1/invoices/{b_issued}",
    ],
)
async def test_therapist_reads_no_invoice_at_all(world: World, path: str) -> None:
    """T1 works in org A, and still sees none of its invoices: 403, never a 404 or the money."""
    url = path.format(
        a_issued=world.billing_a.issued["id"],
        a_draft=world.billing_a.draft["id"],
        b_issued=world.billing_b.issued["id"],
    )
    response = await world.api.client.get(url, headers=world.therapist_1_key)
    assert response.status_code == 403, response.text
    assert "_cents" not in response.text
    assert "INV-" not in response.text


# Stripe's webhook takes no API key: the signature is the only credential.


@pytest.mark.parametrize(
    ("signature", "caller"),
    [(None, None), ("t=1,v1=0000", None), (f"t=1,v1={'0' * 64}", "coordinator_a")],
    ids=["unsigned", "malformed-signature", "forged-signature-with-a-coordinator-key"],
)
async def test_an_unsigned_webhook_event_is_400_and_pays_nothing(
    world: World, signature: str | None, caller: str | None
) -> None:
    """An `invoice.paid` about org A's invoice, unsigned or badly signed: an API key adds
    nothing (the walk sends every role's)."""
    client = world.api.client
    invoice = world.billing_a.issued
    before = ok(await client.get(f"/v1/invoices/{invoice['id']}", headers=world.api.admin))
    event = {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": "invoice.paid",
        "data": {"object": {"id": "in_walk", "metadata": {"invoice_id": invoice["id"]}}},
    }
    headers = {} if caller is None else dict(getattr(world, caller))
    if signature is not None:
        headers["Stripe-Signature"] = signature
    response = await client.post("/v1/integrations/stripe/webhook", json=event, headers=headers)
    assert response.status_code == 400, response.text
    assert invoice["number"] not in response.text
    assert "_cents" not in response.text
    after = ok(await client.get(f"/v1/invoices/{invoice['id']}", headers=world.api.admin))
    assert after == before
