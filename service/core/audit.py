"""Recording a change: the one way every domain records what it changed.

`record_change` writes the audit row (actor, action, entity, before and after as the API shows
them) and, when the action is also a webhook event of the same name, the event in the outbox,
both in the caller's transaction: a change that rolls back leaves neither behind.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.audit import AuditEvent, AuditEventRead
from models.base import Page
from models.types import Role
from service.core import outbox
from service.core.auth import Principal, require_role
from service.core.pagination import PageRequest, paginate

CLINICAL_ENTITY_TYPES = ("observation",)
"""Audited entities whose trail only admins read (finance reads the rest)."""


def snapshot(read_model: BaseModel | None) -> dict[str, Any] | None:
    """The state as the API shows it (JSON-safe); secrets never appear in Read schemas."""
    return None if read_model is None else read_model.model_dump(mode="json")


class Entity(Protocol):
    id: uuid.UUID


async def record_change(
    db: AsyncSession,
    principal: Principal,
    action: str,
    entity: Entity | uuid.UUID,
    *,
    before: BaseModel | None = None,
    after: BaseModel | None = None,
    event: BaseModel | None = None,
    organization_id: uuid.UUID | None = None,
    entity_type: str | None = None,
    reason: str | None = None,
) -> None:
    """Audit `action` on `entity` (a row, or its id) and publish it as an event when it is one,
    with `event` (default: `after`) as its data. The entity type is what precedes the dot in
    "program.confirmed" unless given; the organization is the row's own unless given; `reason` says
    why when the change followed from another one. A change that changed nothing is not
    audited."""
    entity_id = entity if isinstance(entity, uuid.UUID) else entity.id
    organization_id = organization_id or getattr(entity, "organization_id", None)
    before_state, after_state = snapshot(before), snapshot(after)
    if before is None or after is None or before_state != after_state:
        db.add(
            AuditEvent(
                actor_key_id=principal.key_id,
                actor_role=principal.role.value,
                action=action,
                entity_type=entity_type or action.partition(".")[0],
                entity_id=entity_id,
                organization_id=organization_id,
                before=before_state,
                after=after_state,
                reason=reason,
            )
        )
    data = event if event is not None else after
    if outbox.is_event(action) and data is not None:
        await outbox.publish(db, action, data)


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
    if principal.role != Role.admin:
        # Clinical records (observations: their ratings, who read a note) are the admin's.
        stmt = stmt.where(col(AuditEvent.entity_type).not_in(CLINICAL_ENTITY_TYPES))
    if entity_type is not None:
        stmt = stmt.where(col(AuditEvent.entity_type) == entity_type)
    if entity_id is not None:
        stmt = stmt.where(col(AuditEvent.entity_id) == entity_id)
    return await paginate(db, stmt, page, to_read)
