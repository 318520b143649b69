"""Stripe's webhooks: what happened to our invoices on Stripe's side.

The signature is checked by the SDK (`Stripe-Signature`, 300 s tolerance) before anything is
read; a bad or stale one is a 400 and changes nothing. Each event id is handled once: its row in
`stripe_events` is inserted first, under a unique constraint, in the same transaction as the
change it causes. Stripe delivers late, out of order and more than once, so every handler moves
an invoice only forward: a paid invoice never goes back, and money Stripe received is never
dropped (beyond what is due it is an overpayment). An event we do not handle, or about an
invoice that is not ours, is recorded and answered 200 so that Stripe stops redelivering it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import stripe
from pydantic import SecretStr
from sqlalchemy import or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.billing import (
    Invoice,
    InvoiceStatus,
    StripeEvent,
    StripeEventReport,
    StripeWebhookAck,
    VoidInvoice,
)
from service.billing import invoices
from service.core import audit
from service.core.auth import SYSTEM
from service.core.errors import DomainError, ServiceUnavailable

TOLERANCE_SECONDS = 300


class InvalidSignature(DomainError):
    status, slug, title = 400, "invalid-signature", "Invalid webhook signature"


def verified_event(
    payload: bytes, signature: str | None, secret: SecretStr | None
) -> dict[str, Any]:
    """The event, once the SDK has checked that Stripe signed this very payload recently."""
    if secret is None:
        raise ServiceUnavailable("Stripe webhooks are not configured (STRIPE_WEBHOOK_SECRET)")
    try:
        stripe.WebhookSignature.verify_header(
            payload, signature, secret.get_secret_value(), tolerance=TOLERANCE_SECONDS
        )
    except (stripe.SignatureVerificationError, ValueError) as error:
        raise InvalidSignature(
            "The Stripe-Signature header does not match this payload, or is too old"
        ) from error
    try:
        event = json.loads(payload)
    except ValueError:
        event = None
    if not (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and isinstance(event.get("type"), str)
        and isinstance(event.get("data") or {}, dict)
    ):
        raise DomainError("The payload is not a Stripe event")
    return event


async def receive(
    db: AsyncSession, *, payload: bytes, signature: str | None, secret: SecretStr | None
) -> StripeWebhookAck:
    event = verified_event(payload, signature, secret)
    event_id, event_type = str(event["id"])[:255], str(event["type"])[:100]
    obj = (event.get("data") or {}).get("object")
    obj = obj if isinstance(obj, dict) else {}
    is_invoice = obj.get("object") == "invoice" and obj.get("id")
    stripe_invoice_id = str(obj["id"])[:255] if is_invoice else None
    row_id = (
        await db.execute(
            insert(StripeEvent)
            .values(
                id=uuid.uuid4(),
                stripe_event_id=event_id,
                type=event_type,
                stripe_invoice_id=stripe_invoice_id,
                outcome="received",
            )
            .on_conflict_do_nothing(constraint="uq_stripe_events_stripe_event_id")
            .returning(col(StripeEvent.id))
        )
    ).scalar_one_or_none()
    if row_id is None:
        return StripeWebhookAck(duplicate=True, outcome="already_handled")
    invoice = await _our_invoice(db, stripe_invoice_id, obj) if stripe_invoice_id else None
    handler = HANDLERS.get(event_type)
    if handler is None:
        outcome = "ignored"
    elif invoice is None:
        outcome = "not_ours"
    else:
        outcome = await handler(db, invoice, obj, event)
    await db.execute(
        update(StripeEvent)
        .where(col(StripeEvent.id) == row_id)
        .values(outcome=outcome, invoice_id=invoice.id if invoice else None)
    )
    await audit.record_change(
        db,
        SYSTEM,
        f"stripe.{event_type}"[:60] if invoice else "stripe.event",
        invoice or row_id,
        entity_type="invoice" if invoice else "stripe_event",
        after=StripeEventReport(
            stripe_event_id=event_id,
            type=event_type,
            stripe_invoice_id=stripe_invoice_id,
            invoice_id=invoice.id if invoice else None,
            outcome=outcome,
        ),
    )
    return StripeWebhookAck(duplicate=False, outcome=outcome)


async def _our_invoice(
    db: AsyncSession, stripe_invoice_id: str, obj: dict[str, Any]
) -> Invoice | None:
    """Our issued invoice behind a Stripe invoice, locked: by the id we stored, or (when the
    event outran our record of it) by the id we put in its metadata."""
    try:
        ours = uuid.UUID(str(_field(obj, "metadata").get("ensemble_invoice_id")))
    except ValueError:
        ours = None
    match = col(Invoice.stripe_invoice_id) == stripe_invoice_id
    if ours is not None:
        match = or_(
            match,
            (col(Invoice.id) == ours) & col(Invoice.stripe_invoice_id).is_(None),
        )
    return (
        await db.execute(
            select(Invoice)
            .where(match, col(Invoice.status) != InvoiceStatus.draft.value)
            .limit(1)
            .with_for_update()
        )
    ).scalar_one_or_none()


def _field(obj: dict[str, Any], name: str) -> dict[str, Any]:
    value = obj.get(name)
    return value if isinstance(value, dict) else {}


def _when(seconds: object, event: dict[str, Any]) -> datetime:
    stamp = seconds if isinstance(seconds, int) else event.get("created")
    return datetime.fromtimestamp(stamp, UTC) if isinstance(stamp, int) else datetime.now(UTC)


async def _paid(
    db: AsyncSession, invoice: Invoice, obj: dict[str, Any], event: dict[str, Any]
) -> str:
    """The customer paid the Stripe invoice. Never ignored: what is still due settles ours,
    anything beyond (ours was paid, credited or voided meanwhile) is an overpayment. Stripe
    counts what we marked paid out of band in amount_paid (API 2025-03-31.basil and later;
    before, it flagged `paid_out_of_band`): that part is our own mirror, not money received."""
    if obj.get("paid_out_of_band") is True:
        return "not_recorded_paid_out_of_band"
    paid_in_stripe = obj.get("amount_paid")
    if not isinstance(paid_in_stripe, int):
        return "not_recorded_paid_out_of_band"
    collected = paid_in_stripe - invoice.stripe_out_of_band_cents
    if collected <= 0:
        return "not_recorded_paid_out_of_band"
    transitions = _field(obj, "status_transitions")
    return await invoices.record_stripe_payment(
        db,
        invoice.id,
        amount_cents=collected,
        stripe_invoice_id=str(obj["id"])[:255],
        paid_at=_when(transitions.get("paid_at"), event),
    )


async def _voided(
    db: AsyncSession, invoice: Invoice, obj: dict[str, Any], event: dict[str, Any]
) -> str:
    if invoice.status != InvoiceStatus.open:
        return f"unchanged_invoice_{invoice.status}"
    if invoice.amount_paid_cents or invoice.amount_credited_cents:
        return "unchanged_invoice_has_payments"
    await invoices.void(
        db, SYSTEM, invoice.id, VoidInvoice(reason="Voided in Stripe"), voided_in_stripe=True
    )
    return "voided"


async def _noted(
    db: AsyncSession, invoice: Invoice, obj: dict[str, Any], event: dict[str, Any]
) -> str:
    return "audited"


Handler = Callable[[AsyncSession, Invoice, dict[str, Any], dict[str, Any]], Awaitable[str]]
HANDLERS: dict[str, Handler] = {
    "invoice.paid": _paid,
    "invoice.voided": _voided,
    "invoice.payment_failed": _noted,
    "invoice.marked_uncollectible": _noted,
}
