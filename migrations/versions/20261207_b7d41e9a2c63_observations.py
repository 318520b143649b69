"""observations: ratings per focus area and the encrypted clinical note of a delivered session

Revision ID: b7d41e9a2c63
Revises: 8c3e5a7f1d20
Create Date: 2026-12-07 12:10:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b7d41e9a2c63"
down_revision: str | None = "8c3e5a7f1d20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FOCUS_AREAS = (
    "'stress_anxiety', 'focus_attention', 'social_confidence', 'emotional_processing', 'wellbeing'"
)


def upgrade() -> None:
    op.create_table(
        "observations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("program_id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("therapist_id", sa.Uuid(), nullable=False),
        sa.Column("note_ciphertext", sa.Text(), nullable=True),
        sa.Column("note_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_observations_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["program_id"],
            ["programs.id"],
            name=op.f("fk_observations_program_id_programs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_observations_organization_id_organizations"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["therapist_id"],
            ["therapists.id"],
            name=op.f("fk_observations_therapist_id_therapists"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_observations")),
        sa.UniqueConstraint("session_id", name=op.f("uq_observations_session_id")),
    )
    op.create_index(op.f("ix_observations_program_id"), "observations", ["program_id"])
    op.create_index(op.f("ix_observations_organization_id"), "observations", ["organization_id"])
    op.create_index(op.f("ix_observations_therapist_id"), "observations", ["therapist_id"])
    op.create_table(
        "observation_ratings",
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("focus_area", sa.String(length=40), nullable=False),
        sa.Column("rating", sa.SmallInteger(), nullable=False),
        sa.CheckConstraint("rating BETWEEN 1 AND 5", name=op.f("ck_observation_ratings_rating")),
        sa.CheckConstraint(
            f"focus_area IN ({FOCUS_AREAS})", name=op.f("ck_observation_ratings_focus_area")
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["observations.session_id"],
            name=op.f("fk_observation_ratings_session_id_observations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_id", "focus_area", name=op.f("pk_observation_ratings")),
    )


def downgrade() -> None:
    op.drop_table("observation_ratings")
    op.drop_index(op.f("ix_observations_therapist_id"), table_name="observations")
    op.drop_index(op.f("ix_observations_organization_id"), table_name="observations")
    op.drop_index(op.f("ix_observations_program_id"), table_name="observations")
    op.drop_table("observations")
