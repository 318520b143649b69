"""availability ends at midnight

Weekly windows are kept as minutes of the local day (0 to 1440) instead of `time`: a window may
end at "24:00", which PostgreSQL's `time` holds but Python's `datetime.time` cannot.

Revision ID: 9c3e5d21a7f4
Revises: 02746717bd71
Create Date: 2026-12-07 10:30:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9c3e5d21a7f4"
down_revision: str | None = "02746717bd71"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "therapist_availability"
CHECK = "ck_therapist_availability_start_before_end"


def upgrade() -> None:
    op.drop_constraint(op.f(CHECK), TABLE, type_="check")
    op.add_column(TABLE, sa.Column("start_minute", sa.SmallInteger(), nullable=True))
    op.add_column(TABLE, sa.Column("end_minute", sa.SmallInteger(), nullable=True))
    op.execute(
        "UPDATE therapist_availability SET "
        "start_minute = extract(hour FROM start_time) * 60 + extract(minute FROM start_time), "
        "end_minute = extract(hour FROM end_time) * 60 + extract(minute FROM end_time)"
    )
    op.alter_column(TABLE, "start_minute", nullable=False)
    op.alter_column(TABLE, "end_minute", nullable=False)
    op.drop_column(TABLE, "start_time")
    op.drop_column(TABLE, "end_time")
    op.create_check_constraint(
        op.f(CHECK), TABLE, "0 <= start_minute AND start_minute < end_minute AND end_minute <= 1440"
    )


def downgrade() -> None:
    # A window that ends at 24:00 becomes PostgreSQL's time 24:00:00.
    op.drop_constraint(op.f(CHECK), TABLE, type_="check")
    op.add_column(TABLE, sa.Column("start_time", sa.Time(), nullable=True))
    op.add_column(TABLE, sa.Column("end_time", sa.Time(), nullable=True))
    op.execute(
        "UPDATE therapist_availability SET start_time = time '00:00' + make_interval(mins => start_minute), "
        "end_time = CASE WHEN end_minute = 1440 THEN time '24:00' "
        "ELSE time '00:00' + make_interval(mins => end_minute) END"
    )
    op.alter_column(TABLE, "start_time", nullable=False)
    op.alter_column(TABLE, "end_time", nullable=False)
    op.drop_column(TABLE, "start_minute")
    op.drop_column(TABLE, "end_minute")
    op.create_check_constraint(op.f(CHECK), TABLE, "start_time < end_time")
