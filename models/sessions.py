"""Sessions: the dated occurrences of a confirmed program."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ExcludeConstraint
from sqlmodel import Field, SQLModel

from models.base import FORBID_EXTRA, ReadModel, id_field, sql_values, timestamp_field
from models.types import Instant, LongText


class SessionStatus(StrEnum):
    scheduled = "scheduled"
    completed = "completed"
    cancelled = "cancelled"
    late_cancelled = "late_cancelled"
    no_show = "no_show"


# A session holds its therapist's time while live; a cancelled one frees it.
LIVE_STATUSES = (SessionStatus.scheduled, SessionStatus.completed, SessionStatus.no_show)
CANCELLED_STATUSES = (SessionStatus.cancelled, SessionStatus.late_cancelled)
# Billed when delivered, late-cancelled or a no-show (service.billing).
BILLABLE_STATUSES = (SessionStatus.completed, SessionStatus.late_cancelled, SessionStatus.no_show)
LIVE_SQL = f"status IN ({sql_values(LIVE_STATUSES)})"


class CancelledBy(StrEnum):
    organization = "organization"
    provider = "provider"


class Session(SQLModel, table=True):
    __tablename__ = "sessions"
    __table_args__ = (
        # The guarantee behind "a therapist is never double-booked": concurrent requests that
        # each pass the friendly Python check still cannot both commit an overlap.
        ExcludeConstraint(
            ("therapist_id", "="),
            (func.tstzrange(text("starts_at"), text("ends_at")), "&&"),
            using="gist",
            where=text(LIVE_SQL),
            name="ex_sessions_therapist_overlap",
        ),
        # A session's identity in its series is its occurrence: the n-th session of the
        # contract. One planned row per occurrence (materializing twice adds nothing, and a row
        # moved, cancelled or made up by hand keeps its number through every series edit)...
        Index(
            "uq_sessions_program_occurrence",
            "program_id",
            "occurrence",
            unique=True,
            postgresql_where=text("makes_up IS NULL"),
        ),
        # ...and at most one live session per occurrence (a cancelled one and its make-up).
        Index(
            "uq_sessions_program_live_occurrence",
            "program_id",
            "occurrence",
            unique=True,
            postgresql_where=text(LIVE_SQL),
        ),
        # Each therapist's live sessions in time order, with the columns the staffing facts
        # read (weekly minutes, upcoming load, continuity with an organization), so that those
        # are read from the index alone (service.programs.staffing_facts).
        Index(
            "ix_sessions_therapist_live_starts",
            "therapist_id",
            "starts_at",
            postgresql_include=["ends_at", "id", "organization_id", "program_id"],
            postgresql_where=text(LIVE_SQL),
        ),
        CheckConstraint("occurrence >= 1", name="occurrence"),
        CheckConstraint("ends_at > starts_at", name="ends_after_start"),
        CheckConstraint(
            f"status IN ({sql_values(SessionStatus)})",
            name="status",
        ),
        CheckConstraint("attendance IS NULL OR attendance >= 0", name="attendance"),
    )

    id: uuid.UUID = id_field()
    program_id: uuid.UUID = Field(foreign_key="programs.id", ondelete="CASCADE", index=True)
    organization_id: uuid.UUID = Field(
        foreign_key="organizations.id", ondelete="RESTRICT", index=True
    )
    therapist_id: uuid.UUID = Field(foreign_key="therapists.id", ondelete="RESTRICT")
    starts_at: datetime = Field(sa_type=DateTime(timezone=True), index=True)
    ends_at: datetime = Field(sa_type=DateTime(timezone=True))
    original_starts_at: datetime = Field(sa_type=DateTime(timezone=True))
    occurrence: int = Field(sa_type=Integer)
    # A make-up and the session cancelled with notice it replaces, linked both ways (one make-up
    # per cancelled session); both share the occurrence, so it counts once.
    makes_up: uuid.UUID | None = Field(
        default=None,
        sa_column_args=[ForeignKey("sessions.id", ondelete="CASCADE")],
        sa_column_kwargs={"unique": True},
    )
    made_up_by: uuid.UUID | None = Field(
        default=None,
        sa_column_args=[ForeignKey("sessions.id", ondelete="SET NULL")],
        sa_column_kwargs={"unique": True},
    )
    # The program's rate when this session was planned: a rate change from a date on applies
    # to the sessions from that date, and billing reads it here.
    rate_cents: int = Field(sa_type=BigInteger)
    status: str = Field(default=SessionStatus.scheduled.value, sa_type=String(20))
    attendance: int | None = Field(default=None, sa_type=Integer)
    rescheduled: bool = False
    cancelled_by: str | None = Field(default=None, sa_type=String(20))
    cancel_reason: str | None = Field(default=None, sa_type=String(2000))
    cancelled_at: datetime | None = timestamp_field(nullable=True)
    sequence: int = 0
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()


class SessionRead(ReadModel):
    id: uuid.UUID
    program_id: uuid.UUID
    organization_id: uuid.UUID
    therapist_id: uuid.UUID
    starts_at: datetime
    ends_at: datetime
    timezone: str
    status: SessionStatus
    attendance: int | None
    rescheduled: bool
    occurrence: int = Field(description="Which session of the program's series this is (1-based).")
    makes_up: uuid.UUID | None = Field(
        default=None, description="The session cancelled with notice that this one makes up."
    )
    made_up_by: uuid.UUID | None = Field(
        default=None, description="The make-up session of this cancelled one."
    )
    cancelled_by: CancelledBy | None
    cancel_reason: str | None
    cancelled_at: datetime | None
    invoice_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


class SessionReminder(SQLModel, table=True):
    """`session.upcoming` was emitted for this session at this start: once per start, so a
    session moved after its reminder gets one for its new time."""

    __tablename__ = "session_reminders"

    session_id: uuid.UUID = Field(primary_key=True, foreign_key="sessions.id", ondelete="CASCADE")
    starts_at: datetime = Field(primary_key=True, sa_type=DateTime(timezone=True))
    sent_at: datetime = timestamp_field()


class RescheduleSession(SQLModel):
    model_config = FORBID_EXTRA

    starts_at: Instant
    override: bool = Field(
        default=False,
        description="Admin only: allow outside availability, time off or weekly load.",
    )


class SubstituteSession(SQLModel):
    model_config = FORBID_EXTRA

    therapist_id: uuid.UUID
    override: bool = Field(default=False, description="As for reschedule.")


class CancelSession(SQLModel):
    model_config = FORBID_EXTRA

    reason: LongText | None = None
    cancelled_by: CancelledBy | None = None


class MakeUpSession(SQLModel):
    model_config = FORBID_EXTRA

    starts_at: Instant
    override: bool = Field(default=False, description="As for reschedule.")


class CompleteSession(SQLModel):
    model_config = FORBID_EXTRA

    attendance: int = Field(ge=0, le=500)
