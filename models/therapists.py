"""Certified music therapists, their weekly availability and their time off."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import ValidationInfo, field_validator
from sqlalchemy import ARRAY, CheckConstraint, DateTime, SmallInteger, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.base import FORBID_EXTRA, id_field, sql_values, timestamp_field
from models.types import (
    MINUTES_PER_DAY,
    Email,
    FocusArea,
    Instant,
    LongText,
    Name,
    Tags,
    TimeZoneName,
    Weekday,
    WindowEnd,
    WindowStart,
    day_minute,
)

WEEK_MINUTES = 7 * 24 * 60


class TherapistBase(SQLModel):
    name: Name = Field(sa_type=String(200))
    email: Email = Field(sa_type=String(254))
    credentials: Tags = Field(default_factory=list, sa_type=ARRAY(String(40)))
    specialties: list[FocusArea] = Field(default_factory=list, sa_type=ARRAY(String(40)))
    languages: Tags = Field(default_factory=lambda: ["en"], sa_type=ARRAY(String(40)))
    timezone: TimeZoneName = Field(sa_type=String(64))
    max_weekly_minutes: int = Field(default=1800, ge=0, le=WEEK_MINUTES)
    active: bool = True


class Therapist(TherapistBase, table=True):
    __tablename__ = "therapists"
    __table_args__ = (
        UniqueConstraint("email"),
        CheckConstraint(f"max_weekly_minutes BETWEEN 0 AND {WEEK_MINUTES}", name="weekly_minutes"),
    )

    id: uuid.UUID = id_field()
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()
    # Set when the therapist's personal data was replaced by a tombstone (service.catalog.erasure).
    erased_at: datetime | None = timestamp_field(nullable=True)


class TherapistCreate(TherapistBase):
    model_config = FORBID_EXTRA


class TherapistUpdate(SQLModel):
    model_config = FORBID_EXTRA

    name: Name = Field(default=None)
    email: Email = Field(default=None)
    credentials: Tags = Field(default=None)
    specialties: list[FocusArea] = Field(default=None)
    languages: Tags = Field(default=None)
    timezone: TimeZoneName = Field(default=None)
    max_weekly_minutes: int = Field(default=None, ge=0, le=WEEK_MINUTES)
    active: bool = Field(default=None)


class TherapistRead(TherapistBase):
    # Read back as stored: output is not validated against the input rules.
    name: str
    email: str
    credentials: list[str]
    languages: list[str]
    timezone: str
    id: uuid.UUID
    created_at: datetime
    updated_at: datetime
    erased_at: datetime | None


class AvailabilityWindow(SQLModel):
    """One weekly window, in the therapist's own time zone: from `start` on `weekday` to `end`
    the same day, `end` after `start`; "24:00" is the end of the day. A window never crosses
    midnight: a shift from 22:00 to 02:00 is two windows (22:00-24:00 and 00:00-02:00 the next
    day), and windows that meet are one stretch of availability."""

    model_config = FORBID_EXTRA

    weekday: Weekday
    start: WindowStart
    end: WindowEnd

    @field_validator("end")
    @classmethod
    def _end_after_start(cls, end: str, info: ValidationInfo) -> str:
        start = info.data.get("start")
        if start is not None and day_minute(end) <= day_minute(start):
            raise ValueError("end must be after start")
        return end


class WeeklyAvailability(SQLModel):
    windows: list[AvailabilityWindow]


class AvailabilityRow(SQLModel, table=True):
    """A weekly window as minutes of the local day: 0 <= start_minute < end_minute <= 1440."""

    __tablename__ = "therapist_availability"
    __table_args__ = (
        CheckConstraint(
            f"0 <= start_minute AND start_minute < end_minute AND end_minute <= {MINUTES_PER_DAY}",
            name="start_before_end",
        ),
        CheckConstraint(f"weekday IN ({sql_values(Weekday)})", name="weekday"),
    )

    id: uuid.UUID = id_field()
    therapist_id: uuid.UUID = Field(foreign_key="therapists.id", ondelete="CASCADE", index=True)
    weekday: str = Field(sa_type=String(2))
    start_minute: int = Field(sa_type=SmallInteger())
    end_minute: int = Field(sa_type=SmallInteger())


class TimeOffBase(SQLModel):
    starts_at: datetime = Field(sa_type=DateTime(timezone=True))
    ends_at: datetime = Field(sa_type=DateTime(timezone=True))
    reason: LongText | None = Field(default=None, sa_type=String(2000))


class TimeOff(TimeOffBase, table=True):
    __tablename__ = "therapist_time_off"
    __table_args__ = (CheckConstraint("ends_at > starts_at", name="ends_after_start"),)

    id: uuid.UUID = id_field()
    therapist_id: uuid.UUID = Field(foreign_key="therapists.id", ondelete="CASCADE", index=True)
    created_at: datetime = timestamp_field()


class TimeOffCreate(TimeOffBase):
    model_config = FORBID_EXTRA

    starts_at: Instant
    ends_at: Instant

    @field_validator("ends_at")
    @classmethod
    def _ends_after_start(cls, ends_at: datetime, info: ValidationInfo) -> datetime:
        starts_at = info.data.get("starts_at")
        if starts_at is not None and ends_at <= starts_at:
            raise ValueError("ends_at must be after starts_at")
        return ends_at


class TimeOffRead(TimeOffBase):
    # Read back as stored: output is not validated against the input rules.
    reason: str | None
    id: uuid.UUID
    therapist_id: uuid.UUID
    created_at: datetime
