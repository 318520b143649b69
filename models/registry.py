"""Importing this module registers every table on SQLModel.metadata (for Alembic and tests)."""

from models.api_keys import ApiKey
from models.audit import AuditEvent
from models.billing import (
    CreditNote,
    DocumentCounter,
    Invoice,
    InvoiceLine,
    Payment,
    StripeEvent,
)
from models.calendar_feeds import CalendarFeed
from models.idempotency import IdempotencyRecord
from models.offerings import Offering
from models.organizations import Location, Organization
from models.programs import Program
from models.sessions import Session
from models.therapists import AvailabilityRow, Therapist, TimeOff

__all__ = [
    "ApiKey",
    "AuditEvent",
    "AvailabilityRow",
    "CalendarFeed",
    "CreditNote",
    "DocumentCounter",
    "IdempotencyRecord",
    "Invoice",
    "InvoiceLine",
    "Location",
    "Offering",
    "Organization",
    "Payment",
    "Program",
    "Session",
    "StripeEvent",
    "Therapist",
    "TimeOff",
]
