"""Programs: an organization's contract for recurring music therapy sessions."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time
from enum import StrEnum
from typing import Annotated

from sqlalchemy import ARRAY, BigInteger, Boolean, CheckConstraint, Date, Integer, String, Time
from sqlmodel import Field, SQLModel

from models.base import FORBID_EXTRA, id_field, sql_values, timestamp_field
from models.offerings import DURATION_MAX, DURATION_MIN, MAX_PARTICIPANTS
from models.types import (
    Cents,
    ClockTime,
    Day,
    FocusArea,
    HttpsUrl,
    LongText,
    Name,
    TimeZoneName,
    single_line,
)

MAX_EXDATES = 200


class ProgramStatus(StrEnum):
    requested = "requested"
    confirmed = "confirmed"
    completed = "completed"
    cancelled = "cancelled"


class Modality(StrEnum):
    in_person = "in_person"
    online = "online"


VIDEO_URL = "An https:// link to the video call."


class Schedule(SQLModel):
    """When the sessions happen, in the program's own time zone (RFC 5545 recurrence)."""

    model_config = FORBID_EXTRA

    timezone: TimeZoneName
    start_date: Day
    start_time: ClockTime
    duration_minutes: int | None = Field(default=None, ge=DURATION_MIN, le=DURATION_MAX)
    rrule: Annotated[str, single_line(min_length=1, max_length=300)]
    exdates: list[Day] = Field(default_factory=list, max_length=MAX_EXDATES)
    skip_holidays: bool = False


class Program(SQLModel, table=True):
    __tablename__ = "programs"
    __table_args__ = (
        CheckConstraint(f"status IN ({sql_values(ProgramStatus)})", name="status"),
        CheckConstraint(f"modality IN ({sql_values(Modality)})", name="modality"),
        CheckConstraint(
            "(modality = 'in_person' AND location_id IS NOT NULL) OR "
            "(modality = 'online' AND video_url IS NOT NULL)",
            name="modality_has_place",
        ),
        CheckConstraint("participants >= 1", name="participants"),
        CheckConstraint("rate_cents >= 0", name="rate_cents"),
        CheckConstraint(
            f"duration_minutes BETWEEN {DURATION_MIN} AND {DURATION_MAX}", name="duration"
        ),
        CheckConstraint(
            "status IN ('requested', 'cancelled') OR therapist_id IS NOT NULL",
            name="staffed_once_confirmed",
        ),
    )

    id: uuid.UUID = id_field()
    organization_id: uuid.UUID = Field(
        foreign_key="organizations.id", ondelete="RESTRICT", index=True
    )
    offering_id: uuid.UUID = Field(foreign_key="offerings.id", ondelete="RESTRICT")
    therapist_id: uuid.UUID | None = Field(
        default=None, foreign_key="therapists.id", ondelete="RESTRICT", index=True
    )
    location_id: uuid.UUID | None = Field(
        default=None, foreign_key="locations.id", ondelete="RESTRICT"
    )
    title: str = Field(sa_type=String(200))
    focus_areas: list[str] = Field(default_factory=list, sa_type=ARRAY(String(40)))
    modality: str = Field(sa_type=String(20))
    video_url: str | None = Field(default=None, sa_type=String(2000))
    participants: int
    rate_cents: int = Field(sa_type=BigInteger)
    currency: str = Field(sa_type=String(3))
    timezone: str = Field(sa_type=String(64))
    start_date: date = Field(sa_type=Date)
    start_time: time = Field(sa_type=Time)
    duration_minutes: int
    rrule: str = Field(sa_type=String(300))
    exdates: list[date] = Field(default_factory=list, sa_type=ARRAY(Date))
    skip_holidays: bool = Field(default=False, sa_type=Boolean)
    # Where the current schedule's numbering starts: its occurrences on or after series_start
    # are occurrences series_offset + 1, + 2, ... of the contract (the last series edit's
    # effective date and the number of occurrences before it; start_date and 0 until then).
    series_start: date = Field(sa_type=Date)
    series_offset: int = Field(default=0, sa_type=Integer)
    status: str = Field(default=ProgramStatus.requested.value, sa_type=String(20))
    cancel_reason: str | None = Field(default=None, sa_type=String(2000))
    cancelled_at: datetime | None = timestamp_field(nullable=True)
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()

    def schedule(self) -> Schedule:
        # As stored: rows written before today's input rules are read, not judged again.
        return Schedule.model_construct(
            timezone=self.timezone,
            start_date=self.start_date,
            start_time=self.start_time,
            duration_minutes=self.duration_minutes,
            rrule=self.rrule,
            exdates=list(self.exdates),
            skip_holidays=self.skip_holidays,
        )


class ProgramCreate(SQLModel):
    model_config = FORBID_EXTRA

    organization_id: uuid.UUID
    offering_id: uuid.UUID
    title: Name
    focus_areas: list[FocusArea] = Field(default_factory=list, max_length=5)
    modality: Modality
    location_id: uuid.UUID | None = None
    video_url: HttpsUrl | None = Field(default=None, description=VIDEO_URL)
    participants: int = Field(ge=1, le=MAX_PARTICIPANTS)
    rate_cents: Cents | None = None
    schedule: Schedule


class ProgramUpdate(SQLModel):
    """Fields sent are changed. On a confirmed program a change to the schedule, rate or
    therapist needs `effective_date`: sessions from that date on are rebuilt."""

    model_config = FORBID_EXTRA

    title: Name = Field(default=None)
    focus_areas: list[FocusArea] = Field(default=None, max_length=5)
    participants: int = Field(default=None, ge=1, le=MAX_PARTICIPANTS)
    rate_cents: Cents = Field(default=None)
    schedule: Schedule = Field(default=None)
    therapist_id: uuid.UUID = Field(default=None)
    video_url: HttpsUrl = Field(default=None, description=VIDEO_URL)
    location_id: uuid.UUID = Field(default=None)
    effective_date: Day | None = None
    override: bool = Field(default=False, description="As for assign.")


class ScheduleRead(SQLModel):
    timezone: str
    start_date: date
    start_time: ClockTime
    duration_minutes: int
    rrule: str
    exdates: list[date]
    skip_holidays: bool


class ProgramRead(SQLModel):
    id: uuid.UUID
    organization_id: uuid.UUID
    offering_id: uuid.UUID
    title: str
    focus_areas: list[FocusArea]
    modality: Modality
    location_id: uuid.UUID | None
    video_url: str | None
    participants: int
    rate_cents: int
    currency: str
    schedule: ScheduleRead
    status: ProgramStatus
    therapist_id: uuid.UUID | None
    cancel_reason: str | None
    cancelled_at: datetime | None
    created_at: datetime
    updated_at: datetime


class AssignTherapist(SQLModel):
    model_config = FORBID_EXTRA

    therapist_id: uuid.UUID
    effective_date: Day | None = None
    override: bool = Field(
        default=False,
        description="Admin only: staff even outside availability, in time off or over the "
        "weekly load (never over an overlap or a missing credential); the override is audited.",
    )


class ConfirmProgram(SQLModel):
    model_config = FORBID_EXTRA

    override: bool = Field(default=False, description="As for assign.")


class CancelProgram(SQLModel):
    model_config = FORBID_EXTRA

    effective_date: Day
    reason: LongText | None = None


class ProgramSummary(SQLModel):
    program_id: uuid.UUID
    planned_sessions: int
    scheduled_sessions: int
    delivered_sessions: int
    cancelled_sessions: int
    late_cancelled_sessions: int
    no_show_sessions: int
    attendance_rate: float | None
    billed_sessions: int


class TherapistSuggestion(SQLModel):
    therapist_id: uuid.UUID
    name: str
    eligible: bool
    score: float
    reasons: list[str]


class SuggestionList(SQLModel):
    data: list[TherapistSuggestion]
