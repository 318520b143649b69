"""Session observations: the therapist's ratings of a delivered session on the program's focus
areas, and an optional clinical note kept encrypted (the only clinical text Ensemble holds).

No participant is ever named: an observation is about a session, never about a person.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, StringConstraints
from sqlalchemy import CheckConstraint, ForeignKey, SmallInteger, String, Text
from sqlmodel import Field, SQLModel

from models.base import FORBID_EXTRA, id_field, sql_values, timestamp_field
from models.types import MULTILINE_PATTERN, FocusArea

RATING_MIN, RATING_MAX = 1, 5
NOTE_MAX_LENGTH = 10_000


class Observation(SQLModel, table=True):
    """One per session. `note_ciphertext` is the note sealed by core.encryption (purpose
    `observation-note`, bound to this row's id); no column holds the note's text."""

    __tablename__ = "observations"

    id: uuid.UUID = id_field()
    session_id: uuid.UUID = Field(
        sa_column_args=[ForeignKey("sessions.id", ondelete="CASCADE")],
        sa_column_kwargs={"unique": True, "nullable": False},
    )
    program_id: uuid.UUID = Field(foreign_key="programs.id", ondelete="CASCADE", index=True)
    organization_id: uuid.UUID = Field(
        foreign_key="organizations.id", ondelete="RESTRICT", index=True
    )
    # Who delivered the session when it was observed: whose note it is (erasure deletes it).
    therapist_id: uuid.UUID = Field(foreign_key="therapists.id", ondelete="RESTRICT", index=True)
    note_ciphertext: str | None = Field(default=None, sa_type=Text)
    # When the note last changed (audited instead of its text).
    note_changed_at: datetime | None = timestamp_field(nullable=True)
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()


class ObservationRating(SQLModel, table=True):
    """A rating of one focus area, 1 (low) to 5 (high), for one observed session. De-identified:
    it is kept when its therapist is erased."""

    __tablename__ = "observation_ratings"
    __table_args__ = (
        CheckConstraint(f"rating BETWEEN {RATING_MIN} AND {RATING_MAX}", name="rating"),
        CheckConstraint(f"focus_area IN ({sql_values(FocusArea)})", name="focus_area"),
    )

    session_id: uuid.UUID = Field(
        primary_key=True,
        sa_column_args=[ForeignKey("observations.session_id", ondelete="CASCADE")],
    )
    focus_area: str = Field(primary_key=True, sa_type=String(40))
    rating: int = Field(sa_type=SmallInteger)


def _strip(value: str) -> str:
    return value.strip()


ClinicalNote = Annotated[
    str,
    StringConstraints(max_length=NOTE_MAX_LENGTH, pattern=MULTILINE_PATTERN),
    AfterValidator(_strip),
]
"""Free text of several lines, up to 10,000 characters (the multi-line text rules)."""
Rating = Annotated[int, Field(ge=RATING_MIN, le=RATING_MAX)]


class ObservationWrite(SQLModel):
    """The whole observation (PUT replaces it): ratings for the program's focus areas only, and
    an optional note (omitted or null: no note)."""

    model_config = FORBID_EXTRA

    ratings: dict[FocusArea, Rating] = Field(
        max_length=len(FocusArea),
        description="1 (low) to 5 (high) for each of the program's focus areas rated.",
    )
    note: ClinicalNote | None = Field(
        default=None,
        description="Clinical note (encrypted at rest, shown only to the delivering therapist "
        "and admins, every read audited). Never name or describe a participant.",
    )


class ObservationRead(SQLModel):
    session_id: uuid.UUID
    program_id: uuid.UUID
    organization_id: uuid.UUID
    therapist_id: uuid.UUID
    ratings: dict[FocusArea, int]
    note: str | None
    created_at: datetime
    updated_at: datetime


class ObservationAudit(SQLModel):
    """What the audit trail keeps of an observation: never the note's text."""

    session_id: uuid.UUID
    ratings: dict[str, int]
    note_present: bool
    note_changed_at: datetime | None


class NoteRead(SQLModel):
    """The audit row of one read of an observation (who and when are the audit row's own)."""

    session_id: uuid.UUID
    note_present: bool
