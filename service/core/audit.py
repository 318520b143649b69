"""The audit trail: one function, called by the domain layer for every change."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.audit import AuditEvent, AuditEventRead
from models.base import Page
from models.types import Role
from service.core.auth import Principal, require_role
from service.core.pagination import PageRequest, paginate


def snapshot(read_model: BaseModel | None) -> dict[str, Any] | None:
    """The state as the API shows it (JSON-safe); secrets never appear in Read schemas."""
    return None if read_model is None else read_model.model_dump(mode="json")


async def record(
    db: AsyncSession,
    principal: Principal,
    *,
    action: str,
    entity_type: str,
    entity_id: uuid.UUID,
    organization_id: uuid.UUID | None = None,
    before: BaseModel | None = None,
    after: BaseModel | None = None,
) -> None:
    before_state, after_state = snapshot(before), snapshot(after)
    if before is not None and after is not None and before_state == after_state:
        return  # a change that changed nothing is not an event
    db.add(
        AuditEvent(
            actor_key_id=principal.key_id,
            actor_role=principal.role.value,
            action=action,
            entity_type=entity_type,
            entity_id=entity_id,
            organization_id=organization_id,
            before=before_state,
            after=after_state,
        )
    )


def to_read(event: AuditEvent) -> AuditEventRead:
    return AuditEventRead.model_validate(event, from_attributes=True)


async def list_events(
    db: AsyncSession,
    principal: Principal,
    page: PageRequest,
    *,
    entity_type: str | None = None,
    entity_id: uuid.UUID | None = None,
) -> Page[AuditEventRead]:
    require_role(principal, (Role.admin, Role.finance), "read the audit trail")
    stmt = select(AuditEvent)
    if entity_type is not None:
        stmt = stmt.where(col(AuditEvent.entity_type) == entity_type)
    if entity_id is not None:
        stmt = stmt.where(col(AuditEvent.entity_id) == entity_id)
    return await paginate(
        db,
        stmt,
        order_by=AuditEvent.created_at,
        id_column=AuditEvent.id,
        page=page,
        to_read=to_read,
    )
