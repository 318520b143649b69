"""The steps that make Stripe hold exactly what our invoice says, resumable from any point.

Each step first looks at what Stripe already has, then does only what is missing:

1. customer: the organization's stored id; else a customer found by search on
   `metadata['ensemble_organization_id']`; else a new one (key `organization:{id}:customer`).
2. invoice: the stored Stripe id; else one listed on the customer with
   `metadata.ensemble_invoice_id` = ours; else a new `send_invoice` one (`invoice:{id}:create`).
3. items, while the Stripe invoice is a draft: its items are listed, and each of our lines (and
   the tax) without its item is added (`invoice:{id}:line:{line_id}`, `invoice:{id}:tax`).
   Stripe's total must then equal ours to the cent, or nothing is finalized.
4. finalize while a draft (`invoice:{id}:finalize`).
5. credit notes: Stripe's credit notes on the invoice are listed, and each of ours without its
   twin (`metadata.ensemble_credit_note_id`) is created for its amount
   (`invoice:{id}:credit_note:{credit_note_id}`); on a Stripe invoice the customer already paid,
   as an out-of-band credit.
6. send while open and never sent (`invoice:{id}:send`), or, once ours is settled (payments we
   recorded, credit notes), mark it paid out of band (`invoice:{id}:pay`). A partial payment
   we recorded is not mirrored: Stripe cannot take part of an invoice out of band.

A void invoice is voided in Stripe (`invoice:{id}:void`), or its Stripe draft deleted. Every
write goes through `stripe_api.call_once`; ids learned on the way are reported to `Progress`
at once, so the next attempt starts from them.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

import stripe
from stripe.params import (
    CreditNoteCreateParams,
    CustomerCreateParams,
    InvoiceCreateParams,
    InvoiceItemCreateParams,
)

from models.billing import InvoiceStatus
from service.integrations.stripe_api import (
    StripeStepFailed,
    call_once,
    describe,
    idempotency_key,
    with_backoff,
)

T = TypeVar("T")
TAX_ITEM = "tax"
# Our invoice is created after it is issued; a day of margin covers clocks that disagree.
CLOCK_MARGIN = timedelta(days=1)


@dataclass(frozen=True)
class LineToPush:
    id: uuid.UUID
    description: str
    amount_cents: int


@dataclass(frozen=True)
class CreditNoteToPush:
    id: uuid.UUID
    number: str
    amount_cents: int


@dataclass(frozen=True)
class InvoiceToPush:
    """Everything a push needs, read in one short transaction (no ORM objects cross a call)."""

    id: uuid.UUID
    number: str
    status: InvoiceStatus
    currency: str
    total_cents: int
    tax_cents: int
    tax_label: str | None
    tax_rate_bps: int
    issued_at: datetime
    days_until_due: int
    organization_id: uuid.UUID
    organization_name: str
    billing_email: str | None
    stripe_customer_id: str | None
    stripe_invoice_id: str | None
    lines: tuple[LineToPush, ...]
    credit_notes: tuple[CreditNoteToPush, ...] = ()
    # Stripe emailed it already (at our request): never again.
    sent: bool = False
    credited: int = 0  # our amount_credited_cents when read (a later credit note: push again)


@dataclass
class PushResult:
    stripe_customer_id: str | None = None
    stripe_invoice_id: str | None = None
    hosted_invoice_url: str | None = None


class Progress(Protocol):
    """Where a push records what it learns as soon as it learns it."""

    async def customer_found(self, customer_id: str) -> None: ...

    async def invoice_found(self, stripe_invoice_id: str) -> None: ...

    async def invoice_sent(self) -> None: ...

    async def paying_out_of_band(self, amount_cents: int) -> None: ...

    async def out_of_band_refused(self) -> None: ...


async def push(
    client: stripe.StripeClient, invoice: InvoiceToPush, progress: Progress, result: PushResult
) -> None:
    """Make Stripe match `invoice`; `result` holds what is known even when a step fails."""
    if invoice.status == InvoiceStatus.void:
        await _void(client, invoice, result)
        return
    customer_id = await _customer(client, invoice, progress)
    result.stripe_customer_id = customer_id
    found = await _find_invoice(client, invoice, customer_id)
    stripe_invoice = found or await _create_invoice(client, invoice, customer_id)
    result.stripe_invoice_id = stripe_invoice_id = stripe_invoice.id
    await progress.invoice_found(stripe_invoice_id)
    if stripe_invoice.status == "draft":
        await _add_missing_items(client, invoice, stripe_invoice_id, customer_id)
        draft = await _look(
            "retrieve", lambda: client.v1.invoices.retrieve_async(stripe_invoice_id)
        )
        _require_same_total(invoice, draft)
        stripe_invoice = await call_once(
            "finalize",
            idempotency_key("invoice", invoice.id, "finalize"),
            lambda options: client.v1.invoices.finalize_invoice_async(
                stripe_invoice_id, {"auto_advance": False}, options
            ),
        )
    _require_same_total(invoice, stripe_invoice)
    result.hosted_invoice_url = stripe_invoice.hosted_invoice_url
    stripe_invoice = await _add_missing_credit_notes(client, invoice, stripe_invoice)
    await _collect(client, invoice, stripe_invoice, progress)


async def _collect(
    client: stripe.StripeClient,
    invoice: InvoiceToPush,
    finalized: stripe.Invoice,
    progress: Progress,
) -> None:
    """Ask for the money (send, once), or record that it came by other means (paid out of
    band: payments we recorded and credit notes reached the total)."""
    stripe_invoice_id = finalized.id
    if finalized.status == "open" and invoice.status == InvoiceStatus.open:
        if not invoice.sent:
            await call_once(
                "send",
                idempotency_key("invoice", invoice.id, "send"),
                lambda options: client.v1.invoices.send_invoice_async(
                    stripe_invoice_id, None, options
                ),
            )
            await progress.invoice_sent()
    elif finalized.status == "open" and invoice.status == InvoiceStatus.paid:
        # Recorded (committed) before asking: Stripe's `invoice.paid` may arrive before the
        # answer does, and must not be taken for the customer's money.
        await progress.paying_out_of_band(finalized.amount_remaining)
        try:
            await call_once(
                "pay",
                idempotency_key("invoice", invoice.id, "pay"),
                lambda options: client.v1.invoices.pay_async(
                    stripe_invoice_id, {"paid_out_of_band": True}, options
                ),
            )
        except StripeStepFailed as failure:
            # Stripe answered every attempt with an error: the mark did not happen. Without an
            # answer (or with the key still in flight) it may have: it stays counted.
            if not failure.maybe_done:
                await progress.out_of_band_refused()
            raise
    elif finalized.status in ("void", "uncollectible") and invoice.status == InvoiceStatus.open:
        raise StripeStepFailed("check", f"the Stripe invoice is {finalized.status}; ours is open")


async def _look(step: str, call: Callable[[], Awaitable[T]]) -> T:
    """A read (lookups need no idempotency key), again after a backoff while Stripe is busy
    (429, 409) or silent; any other Stripe error fails the step."""
    try:
        return await with_backoff(call)
    except stripe.StripeError as error:
        raise StripeStepFailed(step, describe(error)) from error


def _metadata(obj: stripe.StripeObject) -> dict[str, str]:
    metadata = obj.to_dict().get("metadata") or {}
    return {str(k): str(v) for k, v in metadata.items()}


async def _search_customer(client: stripe.StripeClient, organization_id: uuid.UUID) -> str | None:
    # Search is eventually consistent (about a minute); within that minute a lost answer is
    # covered by the create call's idempotency key, which Stripe keeps for 24 hours.
    found = await _look(
        "customer",
        lambda: client.v1.customers.search_async(
            {"query": f"metadata['ensemble_organization_id']:'{organization_id}'"}
        ),
    )
    oldest = sorted(found.data, key=lambda customer: (customer.created, customer.id))
    return oldest[0].id if oldest else None


async def _customer(client: stripe.StripeClient, invoice: InvoiceToPush, progress: Progress) -> str:
    customer_id = invoice.stripe_customer_id or await _search_customer(
        client, invoice.organization_id
    )
    if customer_id is None:
        params: CustomerCreateParams = {
            "name": invoice.organization_name,
            "metadata": {"ensemble_organization_id": str(invoice.organization_id)},
        }
        if invoice.billing_email:
            params["email"] = invoice.billing_email
        created = await call_once(
            "customer",
            idempotency_key("organization", invoice.organization_id, "customer"),
            lambda options: client.v1.customers.create_async(params, options),
        )
        customer_id = created.id
    if customer_id != invoice.stripe_customer_id:
        await progress.customer_found(customer_id)
    return customer_id


async def _find_invoice(
    client: stripe.StripeClient, invoice: InvoiceToPush, customer_id: str | None
) -> stripe.Invoice | None:
    if invoice.stripe_invoice_id is not None:
        stored = invoice.stripe_invoice_id
        return await _look("invoice", lambda: client.v1.invoices.retrieve_async(stored))
    if customer_id is None:
        return None
    # Listing is strongly consistent (search is not): an invoice created by an attempt whose
    # answer was lost is always seen here.
    page = await _look(
        "invoice",
        lambda: client.v1.invoices.list_async(
            {
                "customer": customer_id,
                "created": {"gte": int((invoice.issued_at - CLOCK_MARGIN).timestamp())},
                "limit": 100,
            }
        ),
    )
    try:
        async for candidate in page.auto_paging_iter():
            if _metadata(candidate).get("ensemble_invoice_id") == str(invoice.id):
                return candidate
    except stripe.StripeError as error:
        raise StripeStepFailed("invoice", describe(error)) from error
    return None


async def _create_invoice(
    client: stripe.StripeClient, invoice: InvoiceToPush, customer_id: str
) -> stripe.Invoice:
    params: InvoiceCreateParams = {
        "customer": customer_id,
        "collection_method": "send_invoice",
        "days_until_due": invoice.days_until_due,
        "currency": invoice.currency.lower(),
        "auto_advance": False,
        # Only the items we add below, never pending items the customer may have elsewhere.
        "pending_invoice_items_behavior": "exclude",
        "description": f"Invoice {invoice.number}",
        "metadata": {
            "ensemble_invoice_id": str(invoice.id),
            "ensemble_invoice_number": invoice.number,
            "ensemble_organization_id": str(invoice.organization_id),
        },
    }
    return await call_once(
        "invoice",
        idempotency_key("invoice", invoice.id, "create"),
        lambda options: client.v1.invoices.create_async(params, options),
    )


def _items_wanted(invoice: InvoiceToPush) -> dict[str, tuple[str, int, str]]:
    """Our item key -> (step, amount, description): one per line, one for the tax."""
    wanted = {str(line.id): ("line", line.amount_cents, line.description) for line in invoice.lines}
    if invoice.tax_cents:
        label = invoice.tax_label or "Tax"
        rate = f"{invoice.tax_rate_bps / 100:g}%"
        wanted[TAX_ITEM] = ("tax", invoice.tax_cents, f"{label} ({rate})")
    return wanted


async def _add_missing_items(
    client: stripe.StripeClient, invoice: InvoiceToPush, draft_id: str, customer_id: str
) -> None:
    page = await _look(
        "items", lambda: client.v1.invoice_items.list_async({"invoice": draft_id, "limit": 100})
    )
    wanted = _items_wanted(invoice)
    present: set[str] = set()
    try:
        async for item in page.auto_paging_iter():
            ours = _metadata(item).get("ensemble_item")
            if ours is None or ours in present or ours not in wanted:
                raise StripeStepFailed(
                    "items", f"the Stripe draft {draft_id} holds an item we did not add"
                )
            present.add(ours)
    except stripe.StripeError as error:
        raise StripeStepFailed("items", describe(error)) from error
    for ours, (step, amount, description) in wanted.items():
        if ours in present:
            continue
        params: InvoiceItemCreateParams = {
            "customer": customer_id,
            "invoice": draft_id,
            "currency": invoice.currency.lower(),
            "amount": amount,
            "description": description,
            "metadata": {"ensemble_invoice_id": str(invoice.id), "ensemble_item": ours},
        }
        key_step = ("tax",) if ours == TAX_ITEM else ("line", ours)
        await call_once(
            step,
            idempotency_key("invoice", invoice.id, *key_step),
            _item_creator(client, params),
        )


def _item_creator(
    client: stripe.StripeClient, params: InvoiceItemCreateParams
) -> Callable[[stripe.RequestOptions], Awaitable[stripe.InvoiceItem]]:
    return lambda options: client.v1.invoice_items.create_async(params, options)


async def _add_missing_credit_notes(
    client: stripe.StripeClient, invoice: InvoiceToPush, finalized: stripe.Invoice
) -> stripe.Invoice:
    """Each of our credit notes once in Stripe; answers the Stripe invoice as it then is (a
    credit note that leaves nothing to pay makes Stripe mark it paid)."""
    if not invoice.credit_notes:
        return finalized
    stripe_invoice_id = finalized.id
    if finalized.status not in ("open", "paid"):
        raise StripeStepFailed(
            "credit_note", f"the Stripe invoice is {finalized.status}: it cannot be credited"
        )
    page = await _look(
        "credit_note",
        lambda: client.v1.credit_notes.list_async({"invoice": stripe_invoice_id, "limit": 100}),
    )
    present: set[str] = set()
    try:
        async for twin in page.auto_paging_iter():
            if twin.status != "void":
                present.add(_metadata(twin).get("ensemble_credit_note_id", ""))
    except stripe.StripeError as error:
        raise StripeStepFailed("credit_note", describe(error)) from error
    missing = [note for note in invoice.credit_notes if str(note.id) not in present]
    for note in missing:
        params: CreditNoteCreateParams = {
            "invoice": stripe_invoice_id,
            "amount": note.amount_cents,
            "memo": f"Credit note {note.number}",
            "metadata": {
                "ensemble_invoice_id": str(invoice.id),
                "ensemble_credit_note_id": str(note.id),
                "ensemble_credit_note_number": note.number,
            },
        }
        if finalized.status == "paid":  # nothing left to reduce: credited outside Stripe
            params["out_of_band_amount"] = note.amount_cents
        await call_once(
            "credit_note",
            idempotency_key("invoice", invoice.id, "credit_note", note.id),
            _credit_note_creator(client, params),
        )
    if not missing:
        return finalized
    return await _look("retrieve", lambda: client.v1.invoices.retrieve_async(stripe_invoice_id))


def _credit_note_creator(
    client: stripe.StripeClient, params: CreditNoteCreateParams
) -> Callable[[stripe.RequestOptions], Awaitable[stripe.CreditNote]]:
    return lambda options: client.v1.credit_notes.create_async(params, options)


def _require_same_total(invoice: InvoiceToPush, found: stripe.Invoice) -> None:
    if found.total != invoice.total_cents or found.currency != invoice.currency.lower():
        raise StripeStepFailed(
            "check",
            f"Stripe's total {found.total} {found.currency} is not ours "
            f"({invoice.total_cents} {invoice.currency.lower()})",
        )


async def _void(client: stripe.StripeClient, invoice: InvoiceToPush, result: PushResult) -> None:
    """Our invoice is void: so is Stripe's, or its draft is gone (a draft cannot be voided)."""
    customer_id = invoice.stripe_customer_id or await _search_customer(
        client, invoice.organization_id
    )
    result.stripe_customer_id = customer_id
    found = await _find_invoice(client, invoice, customer_id)
    if found is None:
        return
    result.stripe_invoice_id = found.id
    result.hosted_invoice_url = found.hosted_invoice_url
    stripe_invoice_id = found.id
    if found.status == "draft":
        await _look("delete", lambda: client.v1.invoices.delete_async(stripe_invoice_id))
    elif found.status in ("open", "uncollectible"):
        await call_once(
            "void",
            idempotency_key("invoice", invoice.id, "void"),
            lambda options: client.v1.invoices.void_invoice_async(stripe_invoice_id, None, options),
        )
    elif found.status == "paid":
        raise StripeStepFailed("void", f"the Stripe invoice {found.id} is already paid")
