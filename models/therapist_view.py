"""What a therapist sees of their own work: where, when, with whom; never money."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlmodel import Field, SQLModel

from models.base import ReadModel
from models.programs import Modality, ProgramStatus, ScheduleRead
from models.sessions import SessionStatus
from models.types import FocusArea


class PlaceRead(ReadModel):
    location_id: uuid.UUID
    name: str
    address: str | None


class MyProgramRead(SQLModel):
    id: uuid.UUID
    title: str
    status: ProgramStatus
    organization_id: uuid.UUID
    organization_name: str
    offering_name: str
    focus_areas: list[FocusArea]
    modality: Modality
    location: PlaceRead | None
    video_url: str | None
    participants: int
    schedule: ScheduleRead


class MySessionRead(ReadModel):
    id: uuid.UUID
    program_id: uuid.UUID
    program_title: str
    organization_id: uuid.UUID
    organization_name: str
    starts_at: datetime
    ends_at: datetime
    timezone: str
    status: SessionStatus
    attendance: int | None
    modality: Modality
    location: PlaceRead | None
    video_url: str | None
    participants: int
    observation_recorded: bool = Field(
        description="Whether the session's observation (ratings, note) has been recorded."
    )


class ObservationDueRead(MySessionRead):
    """A completed session still waiting for its observation."""

    observation_due_by: datetime = Field(
        description="The end of the window in which the therapist may record it."
    )
