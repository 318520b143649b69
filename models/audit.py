"""Audit events: who changed what, with the state before and after."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Index, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from models.base import id_field, timestamp_field


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_created_at", "created_at"),)  # retention

    id: uuid.UUID = id_field()
    created_at: datetime = timestamp_field()
    actor_key_id: uuid.UUID | None = Field(default=None, index=True)
    actor_role: str = Field(sa_type=String(20))
    action: str = Field(sa_type=String(60))
    entity_type: str = Field(sa_type=String(40))
    entity_id: uuid.UUID = Field(index=True)
    organization_id: uuid.UUID | None = Field(default=None, index=True)
    before: dict[str, Any] | None = Field(default=None, sa_type=JSONB)
    after: dict[str, Any] | None = Field(default=None, sa_type=JSONB)
    # Why, when the change was not asked for itself but followed from another (a key revoked
    # because its therapist was deactivated: "therapist_deactivated").
    reason: str | None = Field(default=None, sa_type=String(40))


class AuditEventRead(SQLModel):
    id: uuid.UUID
    created_at: datetime
    actor_key_id: uuid.UUID | None
    actor_role: str
    action: str
    entity_type: str
    entity_id: uuid.UUID
    organization_id: uuid.UUID | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    reason: str | None
