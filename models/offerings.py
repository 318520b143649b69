"""The catalog: what the provider sells, per session."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import ValidationInfo, field_validator
from sqlalchemy import ARRAY, BigInteger, CheckConstraint, String
from sqlmodel import Field, SQLModel

from models.base import FORBID_EXTRA, id_field, sql_values, timestamp_field
from models.types import Cents, CurrencyCode, Name, OfferingFormat, Percent, Tags

DURATION_MIN, DURATION_MAX = 15, 240
MAX_PARTICIPANTS = 500


class OfferingBase(SQLModel):
    name: Name = Field(sa_type=String(200))
    format: OfferingFormat = Field(sa_type=String(20))
    duration_minutes: int = Field(ge=DURATION_MIN, le=DURATION_MAX)
    rate_cents: Cents = Field(sa_type=BigInteger)
    currency: CurrencyCode = Field(default="CAD", sa_type=String(3))
    max_participants: int = Field(default=1, ge=1, le=MAX_PARTICIPANTS)
    cancellation_notice_hours: int = Field(default=48, ge=0, le=24 * 30)
    late_cancel_fee_percent: Percent = 100
    required_credentials: Tags = Field(default_factory=list, sa_type=ARRAY(String(40)))


class Offering(OfferingBase, table=True):
    __tablename__ = "offerings"
    __table_args__ = (
        CheckConstraint(f"format IN ({sql_values(OfferingFormat)})", name="format"),
        CheckConstraint("rate_cents >= 0", name="rate_cents"),
        CheckConstraint(
            f"duration_minutes BETWEEN {DURATION_MIN} AND {DURATION_MAX}", name="duration_minutes"
        ),
        CheckConstraint(
            "format = 'group' OR max_participants = 1", name="individual_has_one_participant"
        ),
        CheckConstraint("late_cancel_fee_percent BETWEEN 0 AND 100", name="late_cancel_fee"),
    )

    id: uuid.UUID = id_field()
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()


def _individual_is_one(format_: OfferingFormat | None, max_participants: int | None) -> None:
    if format_ == OfferingFormat.individual and max_participants not in (None, 1):
        raise ValueError("max_participants must be 1 for an individual offering")


# The spec says what _individual_is_one checks: an individual offering takes one participant.
_ONE_FOR_INDIVIDUAL = {
    "if": {"properties": {"format": {"const": "individual"}}, "required": ["format"]},
    "then": {"properties": {"max_participants": {"const": 1}}},
}


class OfferingCreate(OfferingBase):
    model_config = FORBID_EXTRA | {"json_schema_extra": _ONE_FOR_INDIVIDUAL}

    @field_validator("max_participants")
    @classmethod
    def _participants_fit_format(cls, value: int, info: ValidationInfo) -> int:
        _individual_is_one(info.data.get("format"), value)
        return value


class OfferingUpdate(SQLModel):
    model_config = FORBID_EXTRA | {"json_schema_extra": _ONE_FOR_INDIVIDUAL}

    name: Name = Field(default=None)
    format: OfferingFormat = Field(default=None)
    duration_minutes: int = Field(default=None, ge=DURATION_MIN, le=DURATION_MAX)
    rate_cents: Cents = Field(default=None)
    currency: CurrencyCode = Field(default=None)
    max_participants: int = Field(default=None, ge=1, le=MAX_PARTICIPANTS)
    cancellation_notice_hours: int = Field(default=None, ge=0, le=24 * 30)
    late_cancel_fee_percent: Percent = Field(default=None)
    required_credentials: Tags = Field(default=None)

    @field_validator("max_participants")
    @classmethod
    def _participants_fit_format(cls, value: int, info: ValidationInfo) -> int:
        _individual_is_one(info.data.get("format"), value)
        return value


class OfferingRead(OfferingBase):
    # Read back as stored: output is not validated against the input rules.
    name: str
    currency: str
    required_credentials: list[str]
    id: uuid.UUID
    created_at: datetime
    updated_at: datetime
