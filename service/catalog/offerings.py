"""The catalog of offerings: read by staff and coordinators, changed by admins."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models.base import Page
from models.offerings import Offering, OfferingCreate, OfferingRead, OfferingUpdate
from models.types import OfferingFormat, Role
from service.core import crud
from service.core.auth import Principal, require_role
from service.core.errors import FieldError, NotFound, ValidationFailed
from service.core.pagination import PageRequest, paginate

# The catalog carries prices, and therapists see no money: they learn an offering's name
# through their own programs (/v1/me/programs).
READERS = (Role.admin, Role.finance, Role.coordinator)


def to_read(offering: Offering) -> OfferingRead:
    return OfferingRead.model_validate(offering, from_attributes=True)


async def get_visible(db: AsyncSession, principal: Principal, offering_id: uuid.UUID) -> Offering:
    require_role(principal, READERS, "read the catalog")
    offering = await db.get(Offering, offering_id)
    if offering is None:
        raise NotFound(f"Offering {offering_id} not found")
    return offering


async def create(db: AsyncSession, principal: Principal, data: OfferingCreate) -> OfferingRead:
    require_role(principal, (Role.admin,), "change the catalog")
    offering = Offering.model_validate(data)
    return await crud.create(db, principal, offering, action="offering.created", to_read=to_read)


async def list_offerings(
    db: AsyncSession, principal: Principal, page: PageRequest
) -> Page[OfferingRead]:
    require_role(principal, READERS, "read the catalog")
    return await paginate(db, select(Offering), page, to_read)


async def update(
    db: AsyncSession, principal: Principal, offering: Offering, changes: OfferingUpdate
) -> OfferingRead:
    require_role(principal, (Role.admin,), "change the catalog")
    fields = changes.model_dump(exclude_unset=True)
    merged_format = fields.get("format", offering.format)
    merged_max = fields.get("max_participants", offering.max_participants)
    if merged_format == OfferingFormat.individual and merged_max != 1:
        raise ValidationFailed(
            [
                FieldError(
                    "max_participants",
                    "must be 1 for an individual offering",
                    "individual_participants",
                )
            ]
        )
    return await crud.update(
        db, principal, offering, fields, action="offering.updated", to_read=to_read
    )
