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


class RevenueRow(SQLModel):
    organization_id: uuid.UUID
    currency: str
    month: str
    invoiced_cents: int
    credited_cents: int
    paid_cents: int
    outstanding_cents: int
    overpaid_cents: int


class RevenueReport(SQLModel):
    data: list[RevenueRow]
