"""Stored first responses of POST requests that carried an Idempotency-Key."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Index, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.base import id_field, timestamp_field


class IdempotencyRecord(SQLModel, table=True):
    """Neither the key nor the response can be read from the table alone: the key is stored
    hashed, the response encrypted under a key derived from the Idempotency-Key itself
    (service/core/idempotency.py), so a replayed secret goes only to whoever holds the key."""

    __tablename__ = "idempotency_keys"
    # One row per caller and key: concurrent requests with the same key serialize on this
    # constraint, so only one of them ever runs the change.
    __table_args__ = (
        UniqueConstraint("caller", "key_hash"),
        Index("ix_idempotency_keys_created_at", "created_at"),  # retention, oldest first
    )

    id: uuid.UUID = id_field()
    caller: str = Field(sa_type=String(64))
    key_hash: str = Field(sa_type=String(64))
    request_hash: str = Field(sa_type=String(64))
    method: str = Field(sa_type=String(10))
    path: str = Field(sa_type=String(2048))
    response_status: int | None = None
    response_body: str | None = Field(default=None, sa_type=Text)  # encrypted (enc1:...)
    response_content_type: str | None = Field(default=None, sa_type=String(100))
    created_at: datetime = timestamp_field()
