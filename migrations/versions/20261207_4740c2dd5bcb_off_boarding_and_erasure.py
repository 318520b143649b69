"""off-boarding and erasure: organizations.active, therapists.erased_at, audit_events.reason

Revision ID: 4740c2dd5bcb
Revises: 5e7a1c0d9b42
Create Date: 2026-12-07 09:30:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "4740c2dd5bcb"
down_revision: str | None = "5e7a1c0d9b42"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "organizations",
        sa.Column("active", sa.Boolean(), server_default="true", nullable=False),
    )
    op.add_column("therapists", sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("audit_events", sa.Column("reason", sa.String(length=40), nullable=True))


def downgrade() -> None:
    op.drop_column("audit_events", "reason")
    op.drop_column("therapists", "erased_at")
    op.drop_column("organizations", "active")
