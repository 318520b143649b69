"""The create and update shapes every resource shares: write the row, flush, read it back as
the API shows it, and record the change (service.core.audit), in the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol, TypeVar, cast

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel

from models.base import utcnow
from service.core import audit
from service.core.auth import Principal


class Entity(Protocol):
    id: uuid.UUID


class Updatable(Entity, Protocol):
    updated_at: datetime


Row = TypeVar("Row", bound=Entity)
Changed = TypeVar("Changed", bound=Updatable)
Read = TypeVar("Read", bound=BaseModel)


def _organization_of(row: Any) -> uuid.UUID | None:
    organization_id: uuid.UUID | None = getattr(row, "organization_id", None)
    return organization_id


async def create(
    db: AsyncSession,
    principal: Principal,
    row: Row,
    *,
    action: str,
    to_read: Callable[[Row], Read],
    organization_id: uuid.UUID | None = None,
) -> Read:
    """Insert `row` and audit `action` with the row as read."""
    db.add(row)
    await db.flush()
    read = to_read(row)
    await audit.record_change(
        db,
        principal,
        action,
        entity_id=row.id,
        organization_id=organization_id or _organization_of(row),
        after=read,
    )
    return read


async def update(
    db: AsyncSession,
    principal: Principal,
    row: Changed,
    fields: dict[str, Any],
    *,
    action: str,
    to_read: Callable[[Changed], Read],
    organization_id: uuid.UUID | None = None,
) -> Read:
    """Apply `fields` (a PATCH body dumped with exclude_unset) and audit before and after."""
    before = to_read(row)
    cast(SQLModel, row).sqlmodel_update(fields)
    row.updated_at = utcnow()
    await db.flush()
    after = to_read(row)
    await audit.record_change(
        db,
        principal,
        action,
        entity_id=row.id,
        organization_id=organization_id or _organization_of(row),
        before=before,
        after=after,
    )
    return after
