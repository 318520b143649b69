"""The audit trail (admin, finance)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from models.audit import AuditEventRead
from models.base import Page
from models.types import FilterText
from routers.deps import CurrentPrincipal, DbSession, PageParams
from service.core import audit

router = APIRouter(prefix="/v1")


@router.get("/audit-events", tags=["audit"])
async def list_audit_events(
    db: DbSession,
    principal: CurrentPrincipal,
    page: PageParams,
    entity_type: Annotated[FilterText | None, Query()] = None,
    entity_id: uuid.UUID | None = None,
) -> Page[AuditEventRead]:
    """Every change, oldest first (admin, finance)."""
    return await audit.list_events(
        db, principal, page, entity_type=entity_type, entity_id=entity_id
    )
