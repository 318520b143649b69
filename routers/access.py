"""Who the caller is, their API keys, and the audit trail."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from models.api_keys import ApiKeyCreate, ApiKeyCreated, ApiKeyRead, Me
from models.audit import AuditEventRead
from models.base import Page
from models.sessions import SessionStatus
from models.therapist_view import MyProgramRead, MySessionRead
from models.types import DateOrInstant
from routers.deps import CurrentPrincipal, DbSession, PageParams, UnitOfWorkRoute
from service.catalog import api_keys
from service.core import audit
from service.programs import therapist_view

router = APIRouter(prefix="/v1", route_class=UnitOfWorkRoute)


@router.get("/me", tags=["me"])
async def get_me(principal: CurrentPrincipal) -> Me:
    """The role and scope of the API key making the request."""
    return Me(
        api_key_id=principal.key_id,
        name=principal.name,
        role=principal.role,
        organization_id=principal.organization_id,
        therapist_id=principal.therapist_id,
    )


@router.post("/api-keys", status_code=status.HTTP_201_CREATED, tags=["api-keys"])
async def create_api_key(
    body: ApiKeyCreate, db: DbSession, principal: CurrentPrincipal
) -> ApiKeyCreated:
    """Mint a key (admin). `key` is shown in this response only; store it now."""
    return await api_keys.create(db, principal, body)


@router.get("/api-keys", tags=["api-keys"])
async def list_api_keys(
    db: DbSession, principal: CurrentPrincipal, page: PageParams
) -> Page[ApiKeyRead]:
    """All keys, revoked ones included (admin). Secrets are never shown again."""
    return await api_keys.list_keys(db, principal, page)


@router.delete("/api-keys/{api_key_id}", tags=["api-keys"])
async def revoke_api_key(
    api_key_id: uuid.UUID, db: DbSession, principal: CurrentPrincipal
) -> ApiKeyRead:
    """Revoke a key (admin); it fails with 401 from the next request on."""
    return await api_keys.revoke(db, principal, api_key_id)


@router.get("/audit-events", tags=["audit"])
async def list_audit_events(
    db: DbSession,
    principal: CurrentPrincipal,
    page: PageParams,
    entity_type: Annotated[str | None, Query(max_length=40)] = None,
    entity_id: uuid.UUID | None = None,
) -> Page[AuditEventRead]:
    """Every change, oldest first (admin, finance)."""
    return await audit.list_events(
        db, principal, page, entity_type=entity_type, entity_id=entity_id
    )


@router.get("/me/programs", tags=["me"])
async def list_my_programs(
    db: DbSession, principal: CurrentPrincipal, page: PageParams
) -> Page[MyProgramRead]:
    """A therapist's own programs: organization, place or video link, participants, schedule.
    No rates: therapists see no money."""
    return await therapist_view.my_programs(db, principal, page)


@router.get("/me/sessions", tags=["me"])
async def list_my_sessions(
    db: DbSession,
    principal: CurrentPrincipal,
    page: PageParams,
    start: Annotated[DateOrInstant | None, Query(alias="from")] = None,
    end: Annotated[DateOrInstant | None, Query(alias="to")] = None,
    status: SessionStatus | None = None,
) -> Page[MySessionRead]:
    """A therapist's own sessions by start time, with where to be and for whom
    (`from`/`to` as for /v1/sessions)."""
    return await therapist_view.my_sessions(
        db, principal, page, start=start, end=end, status=status
    )
