"""Client organizations (schools, clinics, workplaces) and their locations."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, String
from sqlmodel import Field, SQLModel

from models.base import FORBID_EXTRA, id_field, timestamp_field
from models.types import (
    BasisPoints,
    CurrencyCode,
    Email,
    HolidayRegion,
    LongText,
    Name,
    OrganizationKind,
    ShortText,
    TimeZoneName,
)

PAYMENT_TERMS_MAX_DAYS = 365


class OrganizationBase(SQLModel):
    name: Name = Field(sa_type=String(200))
    kind: OrganizationKind = Field(sa_type=String(20))
    timezone: TimeZoneName = Field(sa_type=String(64))
    currency: CurrencyCode = Field(default="CAD", sa_type=String(3))
    billing_email: Email | None = Field(default=None, sa_type=String(254))
    tax_rate_bps: BasisPoints = 0
    tax_label: ShortText | None = Field(default=None, sa_type=String(100))
    payment_terms_days: int = Field(default=30, ge=0, le=PAYMENT_TERMS_MAX_DAYS)
    holiday_region: HolidayRegion | None = Field(default=None, sa_type=String(16))
    address: LongText | None = Field(default=None, sa_type=String(2000))


class Organization(OrganizationBase, table=True):
    __tablename__ = "organizations"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('school', 'clinic', 'workplace', 'community', 'other')", name="kind"
        ),
        CheckConstraint("tax_rate_bps BETWEEN 0 AND 10000", name="tax_rate_bps"),
        CheckConstraint(
            f"payment_terms_days BETWEEN 0 AND {PAYMENT_TERMS_MAX_DAYS}", name="payment_terms_days"
        ),
    )

    id: uuid.UUID = id_field()
    # The organization's Stripe customer, once a push found or created it (never shown in the
    # API: it is the integration's bookkeeping). Unique: one customer per organization.
    stripe_customer_id: str | None = Field(default=None, sa_type=String(255), unique=True)
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()


class OrganizationCreate(OrganizationBase):
    model_config = FORBID_EXTRA


class OrganizationUpdate(SQLModel):
    """Only the fields sent are changed; `null` clears an optional field."""

    model_config = FORBID_EXTRA

    name: Name = Field(default=None)
    kind: OrganizationKind = Field(default=None)
    timezone: TimeZoneName = Field(default=None)
    currency: CurrencyCode = Field(default=None)
    billing_email: Email | None = None
    tax_rate_bps: BasisPoints = Field(default=None)
    tax_label: ShortText | None = None
    payment_terms_days: int = Field(default=None, ge=0, le=PAYMENT_TERMS_MAX_DAYS)
    holiday_region: HolidayRegion | None = None
    address: LongText | None = None


# Fields only the provider sets: they decide what an organization is billed.
PROVIDER_ONLY_FIELDS = frozenset({"currency", "tax_rate_bps", "tax_label", "payment_terms_days"})


class OrganizationRead(OrganizationBase):
    # Read back as stored: output is not validated against the input rules.
    name: str
    timezone: str
    currency: str
    billing_email: str | None
    tax_label: str | None
    holiday_region: str | None
    address: str | None
    id: uuid.UUID
    created_at: datetime
    updated_at: datetime


class LocationBase(SQLModel):
    name: Name = Field(sa_type=String(200))
    address: LongText | None = Field(default=None, sa_type=String(2000))
    timezone: TimeZoneName = Field(sa_type=String(64))


class Location(LocationBase, table=True):
    __tablename__ = "locations"

    id: uuid.UUID = id_field()
    organization_id: uuid.UUID = Field(
        foreign_key="organizations.id", ondelete="CASCADE", index=True
    )
    created_at: datetime = timestamp_field()


class LocationCreate(LocationBase):
    model_config = FORBID_EXTRA


class LocationRead(LocationBase):
    # Read back as stored: output is not validated against the input rules.
    name: str
    address: str | None
    timezone: str
    id: uuid.UUID
    organization_id: uuid.UUID
    created_at: datetime
