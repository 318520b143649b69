"""Calendar feeds: secret URLs that calendar apps subscribe to (iCalendar, RFC 5545)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import model_validator
from sqlalchemy import CheckConstraint, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.base import FORBID_EXTRA, id_field, timestamp_field


class CalendarFeed(SQLModel, table=True):
    __tablename__ = "calendar_feeds"
    __table_args__ = (
        UniqueConstraint("token_hash"),
        CheckConstraint("(therapist_id IS NULL) <> (organization_id IS NULL)", name="one_subject"),
    )

    id: uuid.UUID = id_field()
    therapist_id: uuid.UUID | None = Field(
        default=None, foreign_key="therapists.id", ondelete="CASCADE", index=True
    )
    organization_id: uuid.UUID | None = Field(
        default=None, foreign_key="organizations.id", ondelete="CASCADE", index=True
    )
    token_hash: str = Field(sa_type=String(64))
    created_by_key_id: uuid.UUID | None = None
    created_at: datetime = timestamp_field()
    rotated_at: datetime | None = timestamp_field(nullable=True)
    revoked_at: datetime | None = timestamp_field(nullable=True)


class CalendarFeedCreate(SQLModel):
    """A feed of one therapist's sessions or of one organization's sessions."""

    # The spec says "exactly one of" as the validator below does.
    model_config = FORBID_EXTRA | {
        "json_schema_extra": {
            "oneOf": [
                {"required": [subject], "properties": {subject: {"type": "string"}}}
                for subject in ("therapist_id", "organization_id")
            ]
        }
    }

    therapist_id: uuid.UUID | None = None
    organization_id: uuid.UUID | None = None

    @model_validator(mode="after")
    def _exactly_one_subject(self) -> CalendarFeedCreate:
        if (self.therapist_id is None) == (self.organization_id is None):
            raise ValueError("give exactly one of therapist_id and organization_id")
        return self


class CalendarFeedRead(SQLModel):
    id: uuid.UUID
    therapist_id: uuid.UUID | None
    organization_id: uuid.UUID | None
    created_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None


class CalendarFeedCreated(CalendarFeedRead):
    """The only responses that carry the token (create and rotate): the URL is the secret."""

    token: str
    url: str
