"""API keys (admin): mint, list, revoke."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from models.api_keys import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from models.base import Page
from routers.deps import CurrentPrincipal, DbSession, PageParams
from service.catalog import api_keys

router = APIRouter(prefix="/v1")


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
