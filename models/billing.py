"""Invoices, their lines, payments, credit notes and the gapless number counters."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

from models.base import FORBID_EXTRA, ReadModel, id_field, sql_values, timestamp_field
from models.types import Cents, Day, Instant, LongText, ShortText


class InvoiceStatus(StrEnum):
    draft = "draft"
    open = "open"
    paid = "paid"
    void = "void"


class StripeSyncStatus(StrEnum):
    disabled = "disabled"
    pending = "pending"
    synced = "synced"
    failed = "failed"


class PaymentMethod(StrEnum):
    bank_transfer = "bank_transfer"
    cheque = "cheque"
    card = "card"
    stripe = "stripe"
    other = "other"


class Invoice(SQLModel, table=True):
    __tablename__ = "invoices"
    __table_args__ = (
        # At most one draft per organization and currency: runs add to it.
        Index(
            "uq_invoices_one_draft",
            "organization_id",
            "currency",
            unique=True,
            postgresql_where=text("status = 'draft'"),
        ),
        UniqueConstraint("number"),
        CheckConstraint(f"status IN ({sql_values(InvoiceStatus)})", name="status"),
        CheckConstraint("(status = 'draft') = (number IS NULL)", name="numbered_once_issued"),
        CheckConstraint("subtotal_cents >= 0 AND tax_cents >= 0", name="amounts"),
        CheckConstraint("total_cents = subtotal_cents + tax_cents", name="total"),
        # What was received beyond the total (a customer who paid twice) is kept apart in
        # overpaid_cents: amount_paid_cents counts only what settles the invoice.
        CheckConstraint(
            "amount_paid_cents >= 0 AND amount_credited_cents >= 0 AND overpaid_cents >= 0 AND "
            "amount_paid_cents + amount_credited_cents <= total_cents",
            name="paid_within_total",
        ),
        CheckConstraint(
            f"stripe_sync_status IN ({sql_values(StripeSyncStatus)})",
            name="stripe_sync_status",
        ),
    )

    id: uuid.UUID = id_field()
    organization_id: uuid.UUID = Field(
        foreign_key="organizations.id", ondelete="RESTRICT", index=True
    )
    number: str | None = Field(default=None, sa_type=String(20))
    status: str = Field(default=InvoiceStatus.draft.value, sa_type=String(10))
    currency: str = Field(sa_type=String(3))
    period_start: date = Field(sa_type=Date)
    period_end: date = Field(sa_type=Date)
    tax_rate_bps: int = Field(default=0, sa_type=Integer)
    subtotal_cents: int = Field(default=0, sa_type=BigInteger)
    tax_cents: int = Field(default=0, sa_type=BigInteger)
    total_cents: int = Field(default=0, sa_type=BigInteger)
    amount_paid_cents: int = Field(default=0, sa_type=BigInteger)
    amount_credited_cents: int = Field(default=0, sa_type=BigInteger)
    # Received beyond the total: the sum of the invoice's payments marked `overpayment`.
    overpaid_cents: int = Field(
        default=0, sa_type=BigInteger, sa_column_kwargs={"server_default": "0"}
    )
    issued_at: datetime | None = timestamp_field(nullable=True)
    due_date: date | None = Field(default=None, sa_type=Date)
    paid_at: datetime | None = timestamp_field(nullable=True)
    voided_at: datetime | None = timestamp_field(nullable=True)
    void_reason: str | None = Field(default=None, sa_type=String(2000))
    stripe_invoice_id: str | None = Field(default=None, sa_type=String(255))
    hosted_invoice_url: str | None = Field(default=None, sa_type=String(2000))
    stripe_sync_status: str = Field(default=StripeSyncStatus.disabled.value, sa_type=String(10))
    # While set and in the future, one process is pushing this invoice to Stripe: others leave
    # it alone (a lease, not a row lock: no lock is ever held across a network call).
    stripe_sync_lease_until: datetime | None = timestamp_field(nullable=True)
    # Failed pushes in a row, and when the scheduler may try again (longer after each).
    stripe_sync_failures: int = Field(
        default=0, sa_type=Integer, sa_column_kwargs={"server_default": "0"}
    )
    stripe_sync_retry_at: datetime | None = timestamp_field(nullable=True)
    # When Stripe emailed the invoice at our request (sent once; later pushes never resend).
    stripe_sent_at: datetime | None = timestamp_field(nullable=True)
    # What we asked Stripe to mark paid out of band (set before asking): Stripe counts it in
    # the invoice's amount_paid, so its `invoice.paid` is not read as the customer's money.
    stripe_out_of_band_cents: int = Field(
        default=0, sa_type=BigInteger, sa_column_kwargs={"server_default": "0"}
    )
    # `invoice.overdue` was emitted (once, the first day after the due date while open).
    overdue_notified_at: datetime | None = timestamp_field(nullable=True)
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()


class InvoiceLine(SQLModel, table=True):
    __tablename__ = "invoice_lines"
    __table_args__ = (
        # One live line per session: concurrent runs can never bill a session twice. Lines of
        # a void invoice are not live, so its sessions may be billed again.
        Index(
            "uq_invoice_lines_live_session",
            "session_id",
            unique=True,
            postgresql_where=text("live"),
        ),
        CheckConstraint("quantity >= 1 AND unit_amount_cents >= 0", name="line_amounts"),
        CheckConstraint("amount_cents = quantity * unit_amount_cents", name="line_total"),
    )

    id: uuid.UUID = id_field()
    invoice_id: uuid.UUID = Field(foreign_key="invoices.id", ondelete="CASCADE", index=True)
    session_id: uuid.UUID = Field(foreign_key="sessions.id", ondelete="RESTRICT")
    description: str = Field(sa_type=String(500))
    quantity: int = Field(default=1, sa_type=Integer)
    unit_amount_cents: int = Field(sa_type=BigInteger)
    amount_cents: int = Field(sa_type=BigInteger)
    live: bool = Field(default=True, sa_type=Boolean)
    created_at: datetime = timestamp_field()


class Payment(SQLModel, table=True):
    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint("amount_cents > 0", name="positive"),
        CheckConstraint(
            "method IN ('bank_transfer', 'cheque', 'card', 'stripe', 'other')", name="method"
        ),
    )

    id: uuid.UUID = id_field()
    invoice_id: uuid.UUID = Field(foreign_key="invoices.id", ondelete="RESTRICT", index=True)
    amount_cents: int = Field(sa_type=BigInteger)
    method: str = Field(sa_type=String(20))
    reference: str | None = Field(default=None, sa_type=String(255))
    paid_at: datetime = Field(sa_type=DateTime(timezone=True))
    # Money received beyond what the invoice asked for: counted in the invoice's
    # overpaid_cents, not in its amount_paid_cents.
    overpayment: bool = Field(
        default=False, sa_type=Boolean, sa_column_kwargs={"server_default": "false"}
    )
    created_at: datetime = timestamp_field()


class CreditNote(SQLModel, table=True):
    __tablename__ = "credit_notes"
    __table_args__ = (
        UniqueConstraint("number"),
        CheckConstraint("amount_cents > 0", name="positive"),
    )

    id: uuid.UUID = id_field()
    invoice_id: uuid.UUID = Field(foreign_key="invoices.id", ondelete="RESTRICT", index=True)
    number: str = Field(sa_type=String(20))
    amount_cents: int = Field(sa_type=BigInteger)
    reason: str | None = Field(default=None, sa_type=String(2000))
    created_at: datetime = timestamp_field()


class DocumentCounter(SQLModel, table=True):
    """The last number used per series (INV, CN) and year. Issuing increments it in the same
    transaction (a row lock), so numbers are consecutive and a rollback leaves no gap, which a
    PostgreSQL sequence cannot promise."""

    __tablename__ = "document_counters"
    __table_args__ = (PrimaryKeyConstraint("series", "year"),)

    series: str = Field(sa_type=String(10))
    year: int = Field(sa_type=Integer)
    last_number: int = Field(sa_type=Integer)


class StripeEvent(SQLModel, table=True):
    """A Stripe webhook event we handled. The unique event id makes a redelivered event a no-op,
    also when two deliveries of it arrive at once (the second waits on the index, then skips)."""

    __tablename__ = "stripe_events"
    __table_args__ = (UniqueConstraint("stripe_event_id"),)

    id: uuid.UUID = id_field()
    stripe_event_id: str = Field(sa_type=String(255))
    type: str = Field(sa_type=String(100))
    stripe_invoice_id: str | None = Field(default=None, sa_type=String(255))
    invoice_id: uuid.UUID | None = Field(
        default=None, foreign_key="invoices.id", ondelete="SET NULL", index=True
    )
    outcome: str = Field(sa_type=String(40))
    created_at: datetime = timestamp_field()


class InvoiceRunCreate(SQLModel):
    """Bill every billable session whose local date (in its organization's zone) falls in
    period_start..period_end (inclusive), for one organization or all."""

    model_config = FORBID_EXTRA

    period_start: Day
    period_end: Day
    organization_id: uuid.UUID | None = None


class InvoiceLineRead(SQLModel):
    id: uuid.UUID
    session_id: uuid.UUID
    description: str
    quantity: int
    unit_amount_cents: int
    amount_cents: int


class PaymentCreate(SQLModel):
    model_config = FORBID_EXTRA

    amount_cents: Cents = Field(gt=0)
    method: PaymentMethod
    reference: ShortText | None = None
    paid_at: Instant | None = None


class PaymentRead(SQLModel):
    id: uuid.UUID
    invoice_id: uuid.UUID
    amount_cents: int
    method: PaymentMethod
    reference: str | None
    paid_at: datetime
    overpayment: bool
    created_at: datetime


class CreditNoteCreate(SQLModel):
    model_config = FORBID_EXTRA

    amount_cents: Cents = Field(gt=0)
    reason: LongText | None = None


class CreditNoteRead(SQLModel):
    id: uuid.UUID
    invoice_id: uuid.UUID
    number: str
    amount_cents: int
    reason: str | None
    created_at: datetime


class VoidInvoice(SQLModel):
    model_config = FORBID_EXTRA

    reason: LongText | None = None


class InvoiceRead(ReadModel):
    id: uuid.UUID
    number: str | None
    organization_id: uuid.UUID
    status: InvoiceStatus
    currency: str
    period_start: date
    period_end: date
    subtotal_cents: int
    tax_cents: int
    total_cents: int
    amount_paid_cents: int
    amount_credited_cents: int
    amount_due_cents: int
    overpaid_cents: int
    issued_at: datetime | None
    due_date: date | None
    paid_at: datetime | None
    voided_at: datetime | None
    void_reason: str | None
    stripe_invoice_id: str | None
    hosted_invoice_url: str | None
    stripe_sync_status: StripeSyncStatus
    created_at: datetime
    updated_at: datetime


class InvoiceDetail(InvoiceRead):
    lines: list[InvoiceLineRead]
    payments: list[PaymentRead]
    credit_notes: list[CreditNoteRead]


class InvoiceList(SQLModel):
    data: list[InvoiceRead]


class StripeSyncReport(SQLModel):
    """What one push to Stripe did (the audit trail's record of it)."""

    invoice_status: InvoiceStatus
    stripe_sync_status: StripeSyncStatus
    stripe_customer_id: str | None
    stripe_invoice_id: str | None
    hosted_invoice_url: str | None
    failed_step: str | None = None
    error: str | None = None


class StripeEventReport(SQLModel):
    """A handled Stripe webhook event (the audit trail's record of it)."""

    stripe_event_id: str
    type: str
    stripe_invoice_id: str | None
    invoice_id: uuid.UUID | None
    outcome: str


class StripeWebhookAck(SQLModel):
    """The answer to Stripe: 200 means "do not redeliver"."""

    received: bool = True
    duplicate: bool
    outcome: str
