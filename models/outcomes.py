"""Outcomes: what a program (or all of an organization's programs) delivered, and how the
sessions were rated on its focus areas, averaged only where no person can be singled out."""

from __future__ import annotations

import uuid
from datetime import date

from pydantic import BaseModel, ConfigDict, Field

from models.types import FocusArea


class Period(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    start: date = Field(alias="from", description="First local date, inclusive.")
    end: date = Field(alias="to", description="Last local date, inclusive.")


class SessionCounts(BaseModel):
    planned: int = Field(
        description="Sessions in the period, a cancelled session and its make-up counted once."
    )
    delivered: int
    cancelled: int
    late_cancelled: int
    no_show: int


class Attendance(BaseModel):
    expected_per_session: float | None = Field(
        description="Participants expected per delivered session (two decimals)."
    )
    average: float | None = Field(description="Participants present per delivered session.")
    rate: float | None = Field(description="Present over expected, a fraction from 0 to 1.")


class MonthOutcome(BaseModel):
    month: str = Field(description="YYYY-MM, in the program's time zone.")
    average: float | None = Field(description="Null when suppressed.")
    observations: int


class FocusAreaOutcome(BaseModel):
    focus_area: FocusArea
    observations: int
    average: float | None
    first_month_average: float | None
    last_month_average: float | None
    trend: list[MonthOutcome]


class Outcomes(BaseModel):
    period: Period
    sessions: SessionCounts
    attendance: Attendance
    focus_areas: list[FocusAreaOutcome]
    suppressed: bool = Field(description="Whether some rating average is withheld (null).")
    suppression_reason: str | None


class ProgramOutcomes(Outcomes):
    program_id: uuid.UUID


class OrganizationOutcomes(Outcomes):
    organization_id: uuid.UUID
    programs: int = Field(description="Programs with sessions in the period.")
