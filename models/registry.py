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
from models.jobs import JobState, SchedulerLeader
from models.observations import Observation, ObservationRating
from models.offerings import Offering
from models.organizations import Location, Organization
from models.programs import Program
from models.sessions import Session, SessionReminder
from models.therapists import AvailabilityRow, Therapist, TimeOff
from models.webhooks import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent

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
    "JobState",
    "Location",
    "Observation",
    "ObservationRating",
    "Offering",
    "Organization",
    "Payment",
    "Program",
    "SchedulerLeader",
    "Session",
    "SessionReminder",
    "StripeEvent",
    "Therapist",
    "TimeOff",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
]
