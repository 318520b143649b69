"""stripe mirrors money events

Overpayments are recorded instead of ignored: a payment row can be marked `overpayment`, the
invoice keeps their sum in `overpaid_cents`, and the check that amounts never pass the total
becomes "what settles the invoice never passes the total; anything beyond is overpaid".
`stripe_sent_at` records that Stripe emailed the invoice, so later pushes (a credit note, a
payment) never email it again. `stripe_out_of_band_cents` is what we asked Stripe to mark paid
out of band (Stripe counts it in amount_paid since 2025-03-31.basil), so that Stripe's
`invoice.paid` for our own mirror is not taken for the customer's money.

Revision ID: 8c1f5e2a9d37
Revises: 9c3e5d21a7f4
Create Date: 2026-12-07 10:20:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8c1f5e2a9d37"
down_revision: str | None = "9c3e5d21a7f4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "invoices",
        sa.Column("overpaid_cents", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.add_column(
        "invoices", sa.Column("stripe_sent_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "invoices",
        sa.Column("stripe_out_of_band_cents", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.add_column(
        "payments",
        sa.Column("overpayment", sa.Boolean(), server_default="false", nullable=False),
    )
    # Invoices already pushed and open were emailed when they were pushed.
    op.execute(
        "UPDATE invoices SET stripe_sent_at = issued_at "
        "WHERE stripe_sync_status = 'synced' AND stripe_invoice_id IS NOT NULL"
    )
    op.drop_constraint(op.f("ck_invoices_never_overpaid"), "invoices", type_="check")
    op.create_check_constraint(
        op.f("ck_invoices_paid_within_total"),
        "invoices",
        "amount_paid_cents >= 0 AND amount_credited_cents >= 0 AND overpaid_cents >= 0 AND "
        "amount_paid_cents + amount_credited_cents <= total_cents",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_invoices_paid_within_total"), "invoices", type_="check")
    op.create_check_constraint(
        op.f("ck_invoices_never_overpaid"),
        "invoices",
        "amount_paid_cents >= 0 AND amount_credited_cents >= 0 AND "
        "amount_paid_cents + amount_credited_cents <= total_cents",
    )
    op.drop_column("payments", "overpayment")
    op.drop_column("invoices", "stripe_out_of_band_cents")
    op.drop_column("invoices", "stripe_sent_at")
    op.drop_column("invoices", "overpaid_cents")
