"""Invoices: reading, issuing (gapless numbers), voiding, payments and credit notes.

Every change locks the invoice row first (SELECT ... FOR UPDATE), so concurrent payments,
credit notes, voids and issues of one invoice take turns and amounts never go past the total;
the schema's check constraints hold the same line."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.base import Page, read_model, utcnow
from models.billing import (
    CreditNote,
    CreditNoteCreate,
    CreditNoteRead,
    Invoice,
    InvoiceDetail,
    InvoiceLine,
    InvoiceLineRead,
    InvoiceList,
    InvoiceRead,
    InvoiceRunCreate,
    InvoiceStatus,
    Payment,
    PaymentCreate,
    PaymentMethod,
    PaymentRead,
    StripeSyncStatus,
    VoidInvoice,
)
from models.organizations import Organization
from models.sessions import Session
from models.types import Role
from models.webhooks import EventType
from service.billing import numbering, runs
from service.catalog import organizations
from service.core import audit, crud, outbox
from service.core.auth import SYSTEM, Principal, require_role, scope_to_organizations
from service.core.clock import local_today
from service.core.errors import FieldError, InvalidState, ValidationFailed
from service.core.pagination import PageRequest, paginate, row_values
from service.core.settings import Settings

FINANCE = (Role.admin, Role.finance)
READERS = (Role.admin, Role.finance, Role.coordinator)

Read = TypeVar("Read", bound=InvoiceRead)
_DERIVED = "amount_due_cents"


def to_read(invoice: Invoice) -> InvoiceRead:
    return _read(invoice.model_dump(), InvoiceRead)


def _read(values: dict[str, Any], model: type[Read]) -> Read:
    """An invoice's read model (`model`: the invoice alone, or its detail) from its columns'
    values; what is left to pay is derived."""
    values[_DERIVED] = (
        values["total_cents"] - values["amount_paid_cents"] - values["amount_credited_cents"]
    )
    return read_model(model, values)


# A page of invoices selects the read model's columns, not the entity: loading 50 ORM entities
# and dumping each again cost more than the rest of the page.
_LISTED = select(*(col(getattr(Invoice, n)) for n in InvoiceRead.model_fields if n != _DERIVED))
_LISTED_KEYS = tuple(_LISTED.selected_columns.keys())


async def detail(db: AsyncSession, invoice: Invoice) -> InvoiceDetail:
    lines = await db.scalars(
        select(InvoiceLine)
        .join(Session, col(Session.id) == InvoiceLine.session_id)
        .where(col(InvoiceLine.invoice_id) == invoice.id)
        .order_by(col(Session.starts_at), col(InvoiceLine.id))
    )
    payments = await db.scalars(
        select(Payment)
        .where(col(Payment.invoice_id) == invoice.id)
        .order_by(col(Payment.created_at))
    )
    notes = await db.scalars(
        select(CreditNote)
        .where(col(CreditNote.invoice_id) == invoice.id)
        .order_by(col(CreditNote.created_at))
    )
    values = invoice.model_dump() | {
        "lines": [InvoiceLineRead.model_validate(x, from_attributes=True) for x in lines],
        "payments": [PaymentRead.model_validate(x, from_attributes=True) for x in payments],
        "credit_notes": [CreditNoteRead.model_validate(x, from_attributes=True) for x in notes],
    }
    return _read(values, InvoiceDetail)


def _visible(principal: Principal, stmt: sa.Select | None = None) -> sa.Select:
    """Invoices (`stmt`, default the entity) the caller may see."""
    stmt = select(Invoice) if stmt is None else stmt
    stmt = scope_to_organizations(stmt, principal, Invoice.organization_id)
    if principal.role == Role.coordinator:
        # An organization sees what it was sent, not the provider's work in progress.
        stmt = stmt.where(col(Invoice.status) != InvoiceStatus.draft.value)
    return stmt


async def get_visible(
    db: AsyncSession, principal: Principal, invoice_id: uuid.UUID, *, for_update: bool = False
) -> Invoice:
    require_role(principal, READERS, "read invoices")
    stmt = _visible(principal).where(col(Invoice.id) == invoice_id)
    invoice: Invoice = await crud.one_or_404(
        db, stmt.with_for_update() if for_update else stmt, f"Invoice {invoice_id} not found"
    )
    return invoice


async def list_invoices(
    db: AsyncSession,
    principal: Principal,
    page: PageRequest,
    *,
    organization_id: uuid.UUID | None = None,
    status: InvoiceStatus | None = None,
) -> Page[InvoiceRead]:
    require_role(principal, READERS, "read invoices")
    stmt = _visible(principal, _LISTED)
    if organization_id is not None:
        stmt = stmt.where(col(Invoice.organization_id) == organization_id)
    if status is not None:
        stmt = stmt.where(col(Invoice.status) == status.value)
    return await paginate(
        db,
        stmt,
        page,
        lambda row: _read(row_values(_LISTED_KEYS, row), InvoiceRead),
        rows="records",
        entity=Invoice,
    )


async def _locked_for_change(
    db: AsyncSession, principal: Principal, invoice_id: uuid.UUID
) -> Invoice:
    invoice = await get_visible(db, principal, invoice_id, for_update=True)
    require_role(principal, FINANCE, "change invoices")
    return invoice


async def _changed(
    db: AsyncSession, principal: Principal, invoice: Invoice, before: InvoiceRead, action: str
) -> InvoiceDetail:
    invoice.updated_at = utcnow()
    await db.flush()
    await db.refresh(invoice)
    after = to_read(invoice)
    shown = await detail(db, invoice)
    await audit.record_change(
        db, principal, action, invoice, before=before, after=after, event=shown
    )
    if after.status == InvoiceStatus.paid and before.status != InvoiceStatus.paid:
        await outbox.publish(db, EventType.invoice_paid, shown)
    return shown


async def run(db: AsyncSession, principal: Principal, data: InvoiceRunCreate) -> InvoiceList:
    """Bill the period; answers the drafts the run touched."""
    require_role(principal, FINANCE, "run invoicing")
    if data.period_end < data.period_start:
        raise ValidationFailed([FieldError("period_end", "must not be before period_start")])
    if data.organization_id is not None:
        await organizations.get_visible(db, principal, data.organization_id)
    touched = await runs.bill_period(
        db,
        period_start=data.period_start,
        period_end=data.period_end,
        organization_id=data.organization_id,
    )
    drafts = (
        (
            await db.execute(
                select(Invoice)
                .where(col(Invoice.id).in_(touched))
                .order_by(col(Invoice.created_at), col(Invoice.id))
            )
        )
        .scalars()
        .all()
    )
    for draft in drafts:
        await db.refresh(draft)
        await audit.record_change(
            db,
            principal,
            "invoice.run",
            draft,
            after=to_read(draft),
        )
    return InvoiceList(data=[to_read(d) for d in drafts])


async def delete_draft(db: AsyncSession, principal: Principal, invoice_id: uuid.UUID) -> None:
    """Discard a draft; its lines go with it, so its sessions become billable again."""
    invoice = await _locked_for_change(db, principal, invoice_id)
    if invoice.status != InvoiceStatus.draft:
        raise InvalidState(f"Only a draft can be deleted; this invoice is {invoice.status}")
    before = to_read(invoice)
    await db.delete(invoice)
    await db.flush()
    await audit.record_change(db, principal, "invoice.deleted", invoice, before=before)


async def issue(
    db: AsyncSession,
    principal: Principal,
    invoice_id: uuid.UUID,
    *,
    stripe_enabled: bool,
    settings: Settings,
) -> InvoiceDetail:
    """Number the draft (INV-YYYY-NNNNNN, gapless per year of issue in the provider's zone),
    freeze its lines and amounts, set the due date. With Stripe, the push is `pending`: it
    happens after this transaction commits (service.integrations.stripe_sync)."""
    invoice = await _locked_for_change(db, principal, invoice_id)
    if invoice.status != InvoiceStatus.draft:
        raise InvalidState(f"Invoice {invoice.number} is already issued ({invoice.status})")
    has_lines = (
        await db.execute(
            select(col(InvoiceLine.id)).where(col(InvoiceLine.invoice_id) == invoice.id).limit(1)
        )
    ).first()
    if has_lines is None:
        raise InvalidState("An invoice with no lines cannot be issued")
    before = to_read(invoice)
    await runs.recompute_drafts(db, [invoice.id])
    await db.refresh(invoice)
    org = await db.get(Organization, invoice.organization_id)
    assert org is not None
    today = local_today(settings.timezone)
    invoice.number = await numbering.next_number(db, "INV", today.year)
    now = utcnow()
    invoice.status = InvoiceStatus.open.value
    invoice.issued_at = now
    invoice.due_date = today + timedelta(days=org.payment_terms_days)
    invoice.stripe_sync_status = (
        StripeSyncStatus.pending if stripe_enabled else StripeSyncStatus.disabled
    ).value
    if invoice.total_cents == 0:
        invoice.status, invoice.paid_at = InvoiceStatus.paid.value, now
    return await _changed(db, principal, invoice, before, "invoice.issued")


async def void(
    db: AsyncSession,
    principal: Principal,
    invoice_id: uuid.UUID,
    data: VoidInvoice,
    *,
    voided_in_stripe: bool = False,
) -> InvoiceDetail:
    """Void an open invoice with nothing paid or credited. The number stays used; the
    sessions become billable again. An invoice pushed to Stripe (or on its way) is voided
    there too, after this transaction commits, unless Stripe is where it was voided."""
    invoice = await _locked_for_change(db, principal, invoice_id)
    if invoice.status != InvoiceStatus.open:
        raise InvalidState(f"Only an open invoice can be voided; this one is {invoice.status}")
    if invoice.amount_paid_cents or invoice.amount_credited_cents:
        raise InvalidState("An invoice with payments or credit notes cannot be voided")
    before = to_read(invoice)
    await db.execute(
        sa.update(InvoiceLine).where(col(InvoiceLine.invoice_id) == invoice.id).values(live=False)
    )
    invoice.status = InvoiceStatus.void.value
    invoice.voided_at, invoice.void_reason = utcnow(), data.reason
    if voided_in_stripe:
        if invoice.stripe_sync_status != StripeSyncStatus.disabled:
            invoice.stripe_sync_status = StripeSyncStatus.synced.value
    else:
        _mirror_to_stripe(invoice)
    return await _changed(db, principal, invoice, before, "invoice.voided")


async def request_stripe_sync(
    db: AsyncSession, principal: Principal, invoice_id: uuid.UUID, *, stripe_enabled: bool
) -> InvoiceDetail:
    """Mark an issued invoice for a push to Stripe (a failed one, or one issued before Stripe
    was configured); the push itself runs after this transaction commits."""
    invoice = await _locked_for_change(db, principal, invoice_id)
    if not stripe_enabled:
        raise InvalidState("Stripe is not configured on this server (STRIPE_API_KEY)")
    if invoice.status == InvoiceStatus.draft:
        raise InvalidState("A draft is pushed to Stripe when it is issued")
    before = to_read(invoice)
    if invoice.stripe_sync_status in (StripeSyncStatus.disabled, StripeSyncStatus.failed):
        invoice.stripe_sync_status = StripeSyncStatus.pending.value
    return await _changed(db, principal, invoice, before, "invoice.stripe_sync_requested")


def _require_open_with_room(invoice: Invoice, amount_cents: int, what: str) -> None:
    if invoice.status != InvoiceStatus.open:
        raise InvalidState(f"A {what} needs an open invoice; this one is {invoice.status}")
    due = invoice.total_cents - invoice.amount_paid_cents - invoice.amount_credited_cents
    if amount_cents > due:
        raise ValidationFailed(
            [
                FieldError(
                    "amount_cents", f"must be at most the amount due ({due})", "exceeds_amount_due"
                )
            ]
        )


def _settle_if_due(invoice: Invoice) -> None:
    if invoice.amount_paid_cents + invoice.amount_credited_cents == invoice.total_cents:
        invoice.status, invoice.paid_at = InvoiceStatus.paid.value, utcnow()


def _mirror_to_stripe(invoice: Invoice) -> None:
    """A change Stripe must mirror (a payment that settles, a credit note, a void) is pushed
    after this transaction commits; an invoice not on its way to Stripe stays as it is."""
    if invoice.stripe_sync_status != StripeSyncStatus.disabled:
        invoice.stripe_sync_status = StripeSyncStatus.pending.value


async def record_payment(
    db: AsyncSession, principal: Principal, invoice_id: uuid.UUID, data: PaymentCreate
) -> InvoiceDetail:
    """A payment received outside Stripe. When it settles the invoice, the Stripe invoice is
    marked paid out of band after commit; a partial one is not mirrored (docs/finance.md)."""
    invoice = await _locked_for_change(db, principal, invoice_id)
    _require_open_with_room(invoice, data.amount_cents, "payment")
    before = to_read(invoice)
    db.add(
        Payment(
            invoice_id=invoice.id,
            amount_cents=data.amount_cents,
            method=data.method.value,
            reference=data.reference,
            paid_at=data.paid_at or utcnow(),
        )
    )
    invoice.amount_paid_cents += data.amount_cents
    _settle_if_due(invoice)
    if invoice.status == InvoiceStatus.paid:
        _mirror_to_stripe(invoice)
    return await _changed(db, principal, invoice, before, "invoice.payment_recorded")


async def record_stripe_payment(
    db: AsyncSession,
    invoice_id: uuid.UUID,
    *,
    amount_cents: int,
    stripe_invoice_id: str,
    paid_at: datetime,
) -> str:
    """What a customer paid on the Stripe invoice (Stripe's `invoice.paid`), never ignored:
    the part still due settles the invoice, anything beyond it (our invoice was already paid,
    credited or voided meanwhile) is recorded as an overpayment and emits `invoice.overpaid`.
    One Stripe invoice is paid once: a second event about it records nothing."""
    invoice = await _locked_for_change(db, SYSTEM, invoice_id)
    recorded = (
        await db.execute(
            select(col(Payment.id))
            .where(
                col(Payment.invoice_id) == invoice.id,
                col(Payment.method) == PaymentMethod.stripe.value,
                col(Payment.reference) == stripe_invoice_id,
            )
            .limit(1)
        )
    ).first()
    if recorded is not None:
        return "already_paid"
    before = to_read(invoice)
    due = 0
    if invoice.status == InvoiceStatus.open:
        due = invoice.total_cents - invoice.amount_paid_cents - invoice.amount_credited_cents
    applied, excess = min(due, amount_cents), max(amount_cents - due, 0)
    for amount, overpayment in ((applied, False), (excess, True)):
        if amount:
            db.add(
                Payment(
                    invoice_id=invoice.id,
                    amount_cents=amount,
                    method=PaymentMethod.stripe.value,
                    reference=stripe_invoice_id,
                    paid_at=paid_at,
                    overpayment=overpayment,
                )
            )
    invoice.amount_paid_cents += applied
    invoice.overpaid_cents += excess
    if applied:
        _settle_if_due(invoice)
    action = "invoice.overpaid" if excess else "invoice.payment_recorded"
    await _changed(db, SYSTEM, invoice, before, action)
    return "overpayment_recorded" if excess else "payment_recorded"


async def add_credit_note(
    db: AsyncSession,
    principal: Principal,
    invoice_id: uuid.UUID,
    data: CreditNoteCreate,
    *,
    settings: Settings,
) -> InvoiceDetail:
    invoice = await _locked_for_change(db, principal, invoice_id)
    _require_open_with_room(invoice, data.amount_cents, "credit note")
    before = to_read(invoice)
    number = await numbering.next_number(db, "CN", local_today(settings.timezone).year)
    db.add(
        CreditNote(
            invoice_id=invoice.id, number=number, amount_cents=data.amount_cents, reason=data.reason
        )
    )
    invoice.amount_credited_cents += data.amount_cents
    _settle_if_due(invoice)
    _mirror_to_stripe(invoice)  # a Stripe credit note, and paid out of band if now settled
    return await _changed(db, principal, invoice, before, "invoice.credit_note_added")
