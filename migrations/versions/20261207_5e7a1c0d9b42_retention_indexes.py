"""retention indexes

The `apply-retention` job deletes the oldest expired rows in batches; these indexes let each
batch find them without scanning the table.

Revision ID: 5e7a1c0d9b42
Revises: 719957df2600
Create Date: 2026-12-07 09:30:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5e7a1c0d9b42"
down_revision: str | None = "719957df2600"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])
    op.create_index("ix_audit_events_created_at", "audit_events", ["created_at"])
    op.create_index("ix_webhook_events_created_at", "webhook_events", ["created_at"])
    op.create_index(
        "ix_webhook_deliveries_finished",
        "webhook_deliveries",
        ["created_at"],
        postgresql_where=sa.text("status IN ('succeeded', 'cancelled')"),
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_finished", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_events_created_at", table_name="webhook_events")
    op.drop_index("ix_audit_events_created_at", table_name="audit_events")
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
