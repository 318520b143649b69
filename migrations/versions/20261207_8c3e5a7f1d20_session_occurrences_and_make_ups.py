"""session occurrences and make-ups

A session's identity in its series is its occurrence (the n-th session of the contract), no
longer its originally planned start: a session moved, cancelled or made up by hand keeps its
number through later series edits, so the edit never plans that occurrence again. A make-up
links to the session cancelled with notice it replaces (both ways) and shares its occurrence.
Programs remember where their current schedule's numbering starts.

Revision ID: 8c3e5a7f1d20
Revises: 8c1f5e2a9d37
Create Date: 2026-12-07 10:20:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8c3e5a7f1d20"
down_revision: str | None = "8c1f5e2a9d37"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = "status IN ('scheduled', 'completed', 'no_show')"


def upgrade() -> None:
    op.add_column("programs", sa.Column("series_start", sa.Date(), nullable=True))
    op.add_column(
        "programs",
        sa.Column("series_offset", sa.Integer(), server_default="0", nullable=False),
    )
    op.execute("UPDATE programs SET series_start = start_date")
    op.alter_column("programs", "series_start", nullable=False)
    op.alter_column("programs", "series_offset", server_default=None)

    op.add_column("sessions", sa.Column("occurrence", sa.Integer(), nullable=True))
    op.add_column("sessions", sa.Column("makes_up", sa.Uuid(), nullable=True))
    op.add_column("sessions", sa.Column("made_up_by", sa.Uuid(), nullable=True))
    op.execute(
        """
        UPDATE sessions s SET occurrence = n.occurrence
        FROM (
            SELECT id, row_number() OVER (
                PARTITION BY program_id ORDER BY original_starts_at, id
            ) AS occurrence
            FROM sessions
        ) n
        WHERE n.id = s.id
        """
    )
    op.alter_column("sessions", "occurrence", nullable=False)
    op.create_check_constraint(op.f("ck_sessions_occurrence"), "sessions", "occurrence >= 1")
    op.create_foreign_key(
        op.f("fk_sessions_makes_up_sessions"),
        "sessions",
        "sessions",
        ["makes_up"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_foreign_key(
        op.f("fk_sessions_made_up_by_sessions"),
        "sessions",
        "sessions",
        ["made_up_by"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_unique_constraint(op.f("uq_sessions_makes_up"), "sessions", ["makes_up"])
    op.create_unique_constraint(op.f("uq_sessions_made_up_by"), "sessions", ["made_up_by"])
    op.drop_constraint(
        op.f("uq_sessions_program_id_original_starts_at"), "sessions", type_="unique"
    )
    op.create_index(
        "uq_sessions_program_occurrence",
        "sessions",
        ["program_id", "occurrence"],
        unique=True,
        postgresql_where=sa.text("makes_up IS NULL"),
    )
    op.create_index(
        "uq_sessions_program_live_occurrence",
        "sessions",
        ["program_id", "occurrence"],
        unique=True,
        postgresql_where=sa.text(LIVE),
    )


def downgrade() -> None:
    op.drop_index("uq_sessions_program_live_occurrence", table_name="sessions")
    op.drop_index("uq_sessions_program_occurrence", table_name="sessions")
    op.execute("DELETE FROM sessions WHERE makes_up IS NOT NULL")
    op.create_unique_constraint(
        op.f("uq_sessions_program_id_original_starts_at"),
        "sessions",
        ["program_id", "original_starts_at"],
    )
    op.drop_constraint(op.f("uq_sessions_made_up_by"), "sessions", type_="unique")
    op.drop_constraint(op.f("uq_sessions_makes_up"), "sessions", type_="unique")
    op.drop_constraint(op.f("fk_sessions_made_up_by_sessions"), "sessions", type_="foreignkey")
    op.drop_constraint(op.f("fk_sessions_makes_up_sessions"), "sessions", type_="foreignkey")
    op.drop_constraint(op.f("ck_sessions_occurrence"), "sessions", type_="check")
    op.drop_column("sessions", "made_up_by")
    op.drop_column("sessions", "makes_up")
    op.drop_column("sessions", "occurrence")
    op.drop_column("programs", "series_offset")
    op.drop_column("programs", "series_start")
