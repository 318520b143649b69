"""The shapes every resource shares: create and update (write the row, flush, read it back as
the API shows it, record the change through service.core.audit, in the caller's transaction)
and fetching one scoped row or a 404."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeVar, cast

from pydantic import BaseModel
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel

from models.base import utcnow
from service.core import audit
from service.core.auth import Principal
from service.core.errors import NotFound

Row = TypeVar("Row", bound=audit.Entity)
Read = TypeVar("Read", bound=BaseModel)


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
        db, principal, action, row, after=read, organization_id=organization_id
    )
    return read


async def update(
    db: AsyncSession,
    principal: Principal,
    row: Row,
    fields: dict[str, Any],
    *,
    action: str,
    to_read: Callable[[Row], Read],
    organization_id: uuid.UUID | None = None,
) -> Read:
    """Apply `fields` (a PATCH body dumped with exclude_unset, or the columns an action sets),
    stamp `updated_at` where the table has one, and audit before and after."""
    before = to_read(row)
    table = cast(SQLModel, row)
    table.sqlmodel_update(fields)
    if "updated_at" in type(table).model_fields:
        table.sqlmodel_update({"updated_at": utcnow()})
    await db.flush()
    after = to_read(row)
    await audit.record_change(
        db, principal, action, row, before=before, after=after, organization_id=organization_id
    )
    return after


async def one_or_404(
    db: AsyncSession, stmt: Select[Any], missing: str, parameters: dict[str, Any] | None = None
) -> Any:
    """The one row `stmt` (already scoped to the caller) finds, or NotFound(`missing`): a row
    the caller may not see is as absent as one that does not exist."""
    found = (await db.execute(stmt, parameters)).scalar_one_or_none()
    if found is None:
        raise NotFound(missing)
    return found
