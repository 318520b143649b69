"""API keys: created and revoked by admins (or by the CLI, to bootstrap the first admin)."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.api_keys import ApiKey, ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from models.base import Page, utcnow
from models.organizations import Organization
from models.therapists import Therapist
from models.types import Role
from service.catalog import credentials
from service.core import crud
from service.core.auth import Principal, hash_secret, new_secret, require_role
from service.core.errors import FieldError, InvalidState, NotFound, ValidationFailed
from service.core.pagination import PageRequest, paginate

ADMINS = (Role.admin,)


def to_read(key: ApiKey) -> ApiKeyRead:
    return ApiKeyRead.model_validate(key, from_attributes=True)


async def create(db: AsyncSession, principal: Principal, data: ApiKeyCreate) -> ApiKeyCreated:
    """Mint a key. The secret is returned here once and only its hash is stored. A key for a
    deactivated therapist or organization is refused: off-boarding is not undone by a new key."""
    require_role(principal, ADMINS, "manage API keys")
    missing = []
    if data.organization_id:
        # FOR SHARE: a deactivation running now waits for this key, then revokes it too.
        org = await db.get(Organization, data.organization_id, with_for_update={"read": True})
        if org is None:
            missing.append(FieldError("organization_id", "no such organization", "not_found"))
        elif not org.active:
            missing.append(FieldError("organization_id", "is deactivated", "inactive"))
    if data.therapist_id:
        therapist = await db.get(Therapist, data.therapist_id, with_for_update={"read": True})
        if therapist is None:
            missing.append(FieldError("therapist_id", "no such therapist", "not_found"))
        elif not therapist.active:
            missing.append(FieldError("therapist_id", "is deactivated", "inactive"))
    if missing:
        raise ValidationFailed(missing)
    secret = new_secret()
    key = ApiKey.model_validate(
        data, update={"secret_hash": hash_secret(secret), "prefix": secret[:12]}
    )
    read = await crud.create(db, principal, key, action="api_key.created", to_read=to_read)
    return ApiKeyCreated(**read.model_dump(), key=secret)


async def list_keys(db: AsyncSession, principal: Principal, page: PageRequest) -> Page[ApiKeyRead]:
    require_role(principal, ADMINS, "manage API keys")
    return await paginate(db, select(ApiKey), page, to_read)


async def revoke(db: AsyncSession, principal: Principal, key_id: uuid.UUID) -> ApiKeyRead:
    """The key and every calendar feed made with it stop working from the next request."""
    require_role(principal, ADMINS, "manage API keys")
    key = await db.get(ApiKey, key_id, with_for_update=True)
    if key is None:
        raise NotFound(f"API key {key_id} not found")
    if key.revoked_at is not None:
        raise InvalidState(f"API key {key_id} is already revoked")
    read = await crud.update(
        db, principal, key, {"revoked_at": utcnow()}, action="api_key.revoked", to_read=to_read
    )
    await credentials.end_feeds_of_key(db, principal, key.id)
    return read


async def is_active(db: AsyncSession, secret: str) -> bool:
    row = (
        await db.execute(
            select(col(ApiKey.id)).where(
                col(ApiKey.secret_hash) == hash_secret(secret), col(ApiKey.revoked_at).is_(None)
            )
        )
    ).first()
    return row is not None
