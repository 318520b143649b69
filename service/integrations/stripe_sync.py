"""Pushing an issued invoice to Stripe, exactly once, and resuming a push that failed.

`sync_invoice` takes ids and opens its own sessions, so a request's follow-up (after its
commit), `POST /v1/invoices/{id}/stripe-sync` and the scheduler all call the same function.
It never calls Stripe inside a transaction:

1. claim (short transaction): take the invoice's lease if its push is `pending` or `failed`
   and nobody else holds it, and read what the push needs;
2. push (no transaction): `stripe_push.push`, which reports the customer and Stripe invoice ids
   as soon as it learns them (each in its own short transaction, which also extends the lease);
3. record (short transaction): `synced` or `failed`, the Stripe ids, the hosted page, an audit
   event, and the lease released. If our invoice changed meanwhile (paid, voided), the status
   goes back to `pending` and the loop pushes the new state.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import stripe
from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from models.base import utcnow
from models.billing import (
    CreditNote,
    Invoice,
    InvoiceDetail,
    InvoiceLine,
    InvoiceStatus,
    StripeSyncReport,
    StripeSyncStatus,
)
from models.organizations import Organization
from models.sessions import Session
from service.billing import invoices
from service.core import audit
from service.core.auth import SYSTEM, Principal
from service.core.clock import local_date
from service.core.db import transaction
from service.integrations.stripe_api import StripeStepFailed
from service.integrations.stripe_push import (
    CreditNoteToPush,
    InvoiceToPush,
    LineToPush,
    PushResult,
    push,
)

log = logging.getLogger(__name__)
LEASE = timedelta(minutes=10)
RESUMABLE = (StripeSyncStatus.pending.value, StripeSyncStatus.failed.value)
# A push that finds our invoice changed under it pushes again; a few rounds settle any race.
MAX_ROUNDS = 3
BACKOFF_FIRST = timedelta(minutes=1)
BACKOFF_MAX = timedelta(hours=6)

SessionFactory = async_sessionmaker[AsyncSession]


@dataclass(frozen=True)
class StripeSync:
    """What pushing needs: the Stripe client (None when Stripe is not configured) and where to
    open sessions. Built per request from the app, or by a job from its settings."""

    client: stripe.StripeClient | None
    session_factory: SessionFactory
    provider_zone: str

    @property
    def enabled(self) -> bool:
        return self.client is not None

    async def sync_then_read(self, invoice_id: uuid.UUID, principal: Principal) -> InvoiceDetail:
        """Push, then the invoice as `principal` sees it (a route's after-commit answer)."""
        if self.client is not None:
            await sync_invoice(
                self.session_factory,
                self.client,
                invoice_id,
                actor=principal,
                provider_zone=self.provider_zone,
            )
        async with self.session_factory() as db:
            invoice = await invoices.get_visible(db, principal, invoice_id)
            return await invoices.detail(db, invoice)


@dataclass
class _Claim:
    """A held lease on one invoice's push; reports progress in short transactions."""

    session_factory: SessionFactory
    invoice: InvoiceToPush
    lease_until: datetime
    learned: dict[str, str] = field(default_factory=dict)

    async def _extend(self, db: AsyncSession, **values: str | int) -> None:
        extended = (
            await db.execute(
                update(Invoice)
                .where(
                    col(Invoice.id) == self.invoice.id,
                    col(Invoice.stripe_sync_lease_until) == self.lease_until,
                )
                .values(stripe_sync_lease_until=func.now() + LEASE, **values)
                .returning(col(Invoice.stripe_sync_lease_until))
            )
        ).scalar_one_or_none()
        if extended is None:
            raise StripeStepFailed("lease", "another process took this push over")
        self.lease_until = extended

    async def customer_found(self, customer_id: str) -> None:
        async with transaction(self.session_factory) as db:
            await db.execute(
                update(Organization)
                .where(
                    col(Organization.id) == self.invoice.organization_id,
                    col(Organization.stripe_customer_id).is_(None),
                )
                .values(stripe_customer_id=customer_id)
            )
            await self._extend(db)

    async def invoice_found(self, stripe_invoice_id: str) -> None:
        if stripe_invoice_id == self.invoice.stripe_invoice_id:
            return
        async with transaction(self.session_factory) as db:
            await self._extend(db, stripe_invoice_id=stripe_invoice_id)

    async def paying_out_of_band(self, amount_cents: int) -> None:
        async with transaction(self.session_factory) as db:
            await self._extend(db, stripe_out_of_band_cents=amount_cents)

    async def out_of_band_refused(self) -> None:
        async with transaction(self.session_factory) as db:
            await self._extend(db, stripe_out_of_band_cents=0)

    async def invoice_sent(self) -> None:
        async with transaction(self.session_factory) as db:
            await db.execute(
                update(Invoice)
                .where(col(Invoice.id) == self.invoice.id, col(Invoice.stripe_sent_at).is_(None))
                .values(stripe_sent_at=func.now())
            )
            await self._extend(db)


async def sync_invoice(
    session_factory: SessionFactory,
    client: stripe.StripeClient,
    invoice_id: uuid.UUID,
    *,
    provider_zone: str,
    actor: Principal = SYSTEM,
) -> StripeSyncStatus | None:
    """Bring Stripe in line with our invoice, resuming wherever an earlier push stopped.
    Answers the resulting status, or None when there was nothing to do (not issued, already
    synced, Stripe disabled for it) or another process holds the push."""
    status: StripeSyncStatus | None = None
    for _ in range(MAX_ROUNDS):
        claim = await _claim(session_factory, invoice_id, provider_zone)
        if claim is None:
            return status
        result, failure = PushResult(), None
        try:
            await push(client, claim.invoice, claim, result)
        except StripeStepFailed as error:
            failure = error
        except Exception as error:  # a bug must not leave the lease held and the push silent
            log.exception("Stripe push of invoice %s failed unexpectedly", invoice_id)
            failure = StripeStepFailed("unexpected", type(error).__name__)
        status = await _record(session_factory, claim, result, failure, actor)
        if status != StripeSyncStatus.pending:
            return status
    return status


def backoff(failures: int) -> timedelta:
    """1, 2, 4, ... minutes after each failure in a row, at most six hours."""
    return min(BACKOFF_FIRST * 2 ** (failures - 1), BACKOFF_MAX)


async def invoices_to_resume(db: AsyncSession, *, limit: int = 50) -> list[uuid.UUID]:
    """Issued invoices whose push is pending or failed, not in progress and not backing off
    after a failure, oldest first (for the scheduler, which calls `sync_invoice` on each)."""
    rows = await db.execute(
        select(col(Invoice.id))
        .where(
            col(Invoice.status) != InvoiceStatus.draft.value,
            col(Invoice.stripe_sync_status).in_(RESUMABLE),
            or_(
                col(Invoice.stripe_sync_lease_until).is_(None),
                col(Invoice.stripe_sync_lease_until) < func.now(),
            ),
            or_(
                col(Invoice.stripe_sync_retry_at).is_(None),
                col(Invoice.stripe_sync_retry_at) <= func.now(),
            ),
        )
        .order_by(col(Invoice.updated_at), col(Invoice.id))
        .limit(limit)
    )
    return list(rows.scalars())


async def _claim(
    session_factory: SessionFactory, invoice_id: uuid.UUID, provider_zone: str
) -> _Claim | None:
    async with transaction(session_factory) as db:
        lease_until = (
            await db.execute(
                update(Invoice)
                .where(
                    col(Invoice.id) == invoice_id,
                    col(Invoice.status) != InvoiceStatus.draft.value,
                    col(Invoice.stripe_sync_status).in_(RESUMABLE),
                    or_(
                        col(Invoice.stripe_sync_lease_until).is_(None),
                        col(Invoice.stripe_sync_lease_until) < func.now(),
                    ),
                )
                .values(stripe_sync_lease_until=func.now() + LEASE)
                .returning(col(Invoice.stripe_sync_lease_until))
            )
        ).scalar_one_or_none()
        if lease_until is None:
            return None
        invoice = (
            await db.execute(select(Invoice).where(col(Invoice.id) == invoice_id))
        ).scalar_one()
        org = await db.get(Organization, invoice.organization_id)
        assert org is not None
        lines = (
            await db.execute(
                select(InvoiceLine)
                .join(Session, col(Session.id) == InvoiceLine.session_id)
                .where(col(InvoiceLine.invoice_id) == invoice_id)
                .order_by(col(Session.starts_at), col(InvoiceLine.id))
            )
        ).scalars()
        notes = (
            await db.execute(
                select(CreditNote)
                .where(col(CreditNote.invoice_id) == invoice_id)
                .order_by(col(CreditNote.created_at), col(CreditNote.id))
            )
        ).scalars()
        to_push = _to_push(invoice, org, list(lines), list(notes), provider_zone)
        return _Claim(session_factory, to_push, lease_until)


def _to_push(
    invoice: Invoice,
    org: Organization,
    lines: list[InvoiceLine],
    notes: list[CreditNote],
    provider_zone: str,
) -> InvoiceToPush:
    assert invoice.number and invoice.issued_at and invoice.due_date
    issued_on = local_date(invoice.issued_at, provider_zone)
    return InvoiceToPush(
        id=invoice.id,
        number=invoice.number,
        status=InvoiceStatus(invoice.status),
        currency=invoice.currency,
        total_cents=invoice.total_cents,
        tax_cents=invoice.tax_cents,
        tax_label=org.tax_label,
        tax_rate_bps=invoice.tax_rate_bps,
        issued_at=invoice.issued_at,
        days_until_due=max((invoice.due_date - issued_on).days, 0),
        organization_id=org.id,
        organization_name=org.name,
        billing_email=org.billing_email,
        stripe_customer_id=org.stripe_customer_id,
        stripe_invoice_id=invoice.stripe_invoice_id,
        lines=tuple(LineToPush(x.id, x.description, x.amount_cents) for x in lines),
        credit_notes=tuple(CreditNoteToPush(x.id, x.number, x.amount_cents) for x in notes),
        sent=invoice.stripe_sent_at is not None,
        credited=invoice.amount_credited_cents,
    )


async def _record(
    session_factory: SessionFactory,
    claim: _Claim,
    result: PushResult,
    failure: StripeStepFailed | None,
    actor: Principal,
) -> StripeSyncStatus:
    pushed = claim.invoice
    async with transaction(session_factory) as db:
        invoice = (
            await db.execute(select(Invoice).where(col(Invoice.id) == pushed.id).with_for_update())
        ).scalar_one()
        if result.stripe_invoice_id:
            invoice.stripe_invoice_id = result.stripe_invoice_id
        if result.hosted_invoice_url:
            invoice.hosted_invoice_url = result.hosted_invoice_url
        if failure is not None:
            status = StripeSyncStatus.failed
        elif (invoice.status, invoice.amount_credited_cents) != (pushed.status, pushed.credited):
            # paid, credited or voided while we pushed: push that too
            status = StripeSyncStatus.pending
        else:
            status = StripeSyncStatus.synced
        invoice.stripe_sync_status = status.value
        if invoice.stripe_sync_lease_until == claim.lease_until:
            invoice.stripe_sync_lease_until = None
        if failure is not None:
            # The scheduler leaves it alone until then; a person's change still pushes at once.
            invoice.stripe_sync_failures += 1
            invoice.stripe_sync_retry_at = utcnow() + backoff(invoice.stripe_sync_failures)
        else:
            invoice.stripe_sync_failures = 0
            invoice.stripe_sync_retry_at = None
        invoice.updated_at = utcnow()
        await db.flush()
        await audit.record_change(
            db,
            actor,
            "invoice.stripe_sync_failed" if failure else "invoice.stripe_synced",
            invoice,
            after=StripeSyncReport(
                invoice_status=pushed.status,
                stripe_sync_status=status,
                stripe_customer_id=result.stripe_customer_id,
                stripe_invoice_id=invoice.stripe_invoice_id,
                hosted_invoice_url=invoice.hosted_invoice_url,
                failed_step=failure.step if failure else None,
                error=failure.message if failure else None,
            ),
        )
    if failure is not None:
        log.warning("Stripe push of invoice %s failed at %s", pushed.id, failure)
    return status
