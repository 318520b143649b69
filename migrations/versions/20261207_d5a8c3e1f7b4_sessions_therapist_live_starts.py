"""sessions: each therapist's live sessions in time order, covering the staffing facts

The weekly minutes, upcoming load and continuity the staffing rules and the suggestions read
(service.programs.staffing_facts) come from this index alone, one range per therapist, instead
of the whole table's sessions joined and filtered (bench/suggestions.py).

Revision ID: d5a8c3e1f7b4
Revises: b7d41e9a2c63
Create Date: 2026-12-07 15:20:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d5a8c3e1f7b4"
down_revision: str | None = "b7d41e9a2c63"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_sessions_therapist_live_starts",
        "sessions",
        ["therapist_id", "starts_at"],
        postgresql_include=["ends_at", "id", "organization_id", "program_id"],
        postgresql_where=sa.text("status IN ('scheduled', 'completed', 'no_show')"),
    )


def downgrade() -> None:
    op.drop_index("ix_sessions_therapist_live_starts", table_name="sessions")
