"""Outbound webhooks: endpoints that finance systems register, the events of the outbox, and one
delivery per event and endpoint with a log of every attempt."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, WithJsonSchema, field_validator
from sqlalchemy import ARRAY, CheckConstraint, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from models.base import FORBID_EXTRA, id_field, sql_values, timestamp_field
from models.types import LongText, WebUrl


class EventType(StrEnum):
    """Every event a webhook endpoint may subscribe to (DESIGN.md, Integrations)."""

    program_requested = "program.requested"
    program_confirmed = "program.confirmed"
    program_cancelled = "program.cancelled"
    session_rescheduled = "session.rescheduled"
    session_cancelled = "session.cancelled"
    session_completed = "session.completed"
    session_made_up = "session.made_up"
    session_upcoming = "session.upcoming"
    invoice_issued = "invoice.issued"
    invoice_paid = "invoice.paid"
    invoice_voided = "invoice.voided"
    invoice_overpaid = "invoice.overpaid"
    invoice_overdue = "invoice.overdue"


ALL_EVENTS = "*"


class DeliveryStatus(StrEnum):
    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"  # the retry schedule is used up; kept for a manual retry
    cancelled = "cancelled"  # its endpoint was deleted before it succeeded


def _subscribable(value: str) -> str:
    if value != ALL_EVENTS and value not in EventType._value2member_map_:
        known = ", ".join(e.value for e in EventType)
        raise ValueError(f"unknown event type {value!r}; use one of {known}, or '*'")
    return value


Subscription = Annotated[
    str,
    AfterValidator(_subscribable),
    WithJsonSchema({"type": "string", "enum": [*(e.value for e in EventType), ALL_EVENTS]}),
]
Subscriptions = Annotated[
    list[Subscription],
    # As WebhookEndpointCreate checks: '*' alone, or distinct event types.
    WithJsonSchema(
        {
            "oneOf": [
                {"type": "array", "items": {"const": ALL_EVENTS}, "minItems": 1, "maxItems": 1},
                {
                    "type": "array",
                    "items": {"enum": [e.value for e in EventType]},
                    "minItems": 1,
                    "maxItems": len(EventType),
                    "uniqueItems": True,
                },
            ]
        }
    ),
]


class WebhookEndpoint(SQLModel, table=True):
    __tablename__ = "webhook_endpoints"

    id: uuid.UUID = id_field()
    url: str = Field(sa_type=String(2000))
    events: list[str] = Field(sa_type=ARRAY(String(40)))
    description: str = Field(default="", sa_type=String(2000))
    # Signing needs the secret itself (an HMAC key), so it is stored, never shown again, and
    # encrypted (service/integrations/webhook_endpoints.seal_secret).
    secret: str = Field(sa_type=String(500))
    # After a rotation the old secret keeps signing beside the new one for a while, so a
    # receiver can switch without dropping deliveries (Standard Webhooks allows several).
    previous_secret: str | None = Field(default=None, sa_type=String(500))
    previous_secret_expires_at: datetime | None = timestamp_field(nullable=True)
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()
    deleted_at: datetime | None = timestamp_field(nullable=True)


class WebhookEvent(SQLModel, table=True):
    """The outbox: written in the transaction of the change that caused it."""

    __tablename__ = "webhook_events"
    __table_args__ = (Index("ix_webhook_events_created_at", "created_at"),)  # retention

    id: uuid.UUID = id_field()
    type: str = Field(sa_type=String(40))
    data: dict[str, Any] = Field(sa_type=JSONB)
    created_at: datetime = timestamp_field()


class WebhookDelivery(SQLModel, table=True):
    """One event for one endpoint; its id is the `webhook-id` of every attempt."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id"),
        CheckConstraint(f"status IN ({sql_values(DeliveryStatus)})", name="status"),
        CheckConstraint("(status = 'pending') = (next_attempt_at IS NOT NULL)", name="scheduled"),
        # The deliverer's claim scans only what is waiting.
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_webhook_deliveries_endpoint_id_created_at", "endpoint_id", "created_at", "id"),
        # Retention scans only finished deliveries, oldest first.
        Index(
            "ix_webhook_deliveries_finished",
            "created_at",
            postgresql_where=text("status IN ('succeeded', 'cancelled')"),
        ),
    )

    id: uuid.UUID = id_field()
    event_id: uuid.UUID = Field(foreign_key="webhook_events.id", ondelete="CASCADE", index=True)
    endpoint_id: uuid.UUID = Field(foreign_key="webhook_endpoints.id", ondelete="CASCADE")
    status: str = Field(default=DeliveryStatus.pending.value, sa_type=String(10))
    # Attempts made so far; also the claim's token (a claim raises it, a result names it).
    attempt_count: int = Field(default=0, sa_type=Integer)
    # When it is due; while an attempt is in flight, when that attempt's claim expires.
    next_attempt_at: datetime | None = timestamp_field(nullable=True)
    last_status_code: int | None = Field(default=None, sa_type=Integer)
    last_error: str | None = Field(default=None, sa_type=String(500))
    created_at: datetime = timestamp_field()
    delivered_at: datetime | None = timestamp_field(nullable=True)


class WebhookAttempt(SQLModel, table=True):
    __tablename__ = "webhook_attempts"
    __table_args__ = (UniqueConstraint("delivery_id", "attempt"),)

    id: uuid.UUID = id_field()
    delivery_id: uuid.UUID = Field(foreign_key="webhook_deliveries.id", ondelete="CASCADE")
    attempt: int = Field(sa_type=Integer)
    attempted_at: datetime = timestamp_field()
    duration_ms: int = Field(sa_type=Integer)
    status_code: int | None = Field(default=None, sa_type=Integer)
    error: str | None = Field(default=None, sa_type=String(500))
    response_excerpt: str | None = Field(default=None, sa_type=String(500))
    next_attempt_at: datetime | None = timestamp_field(nullable=True)


class WebhookEndpointCreate(SQLModel):
    model_config = FORBID_EXTRA

    url: WebUrl
    events: Subscriptions = Field(min_length=1, max_length=len(EventType) + 1)
    description: LongText = ""

    @field_validator("events")
    @classmethod
    def _distinct(cls, events: list[str]) -> list[str]:
        if len(set(events)) != len(events):
            raise ValueError("lists an event type twice")
        if ALL_EVENTS in events and len(events) > 1:
            raise ValueError("'*' already subscribes to every event; list it alone")
        return events


class WebhookEndpointRead(SQLModel):
    id: uuid.UUID
    url: str
    events: list[str]
    description: str
    created_at: datetime
    updated_at: datetime


class WebhookEndpointCreated(WebhookEndpointRead):
    """The only response that carries the signing secret; it cannot be shown again."""

    secret: str


class WebhookAttemptRead(SQLModel):
    attempt: int
    attempted_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    response_excerpt: str | None
    next_attempt_at: datetime | None


class WebhookDeliveryRead(SQLModel):
    id: uuid.UUID
    webhook_id: str
    endpoint_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    attempts: list[WebhookAttemptRead]
