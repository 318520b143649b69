"""Report rows."""

from __future__ import annotations

import uuid

from sqlmodel import SQLModel


class UtilizationRow(SQLModel):
    therapist_id: uuid.UUID
    name: str
    available_minutes: int
    scheduled_minutes: int
    delivered_minutes: int
    cancelled_sessions: int


class UtilizationReport(SQLModel):
    data: list[UtilizationRow]
