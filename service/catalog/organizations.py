"""Client organizations and their locations."""

from __future__ import annotations

import uuid

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.base import Page
from models.organizations import (
    PROVIDER_ONLY_FIELDS,
    Location,
    LocationCreate,
    LocationRead,
    Organization,
    OrganizationCreate,
    OrganizationRead,
    OrganizationUpdate,
)
from models.types import Role
from service.catalog import credentials
from service.catalog.credentials import RevocationReason
from service.core import crud
from service.core.auth import Principal, ScopedStatement, require_role, scope_to_organizations
from service.core.errors import Forbidden
from service.core.pagination import PageRequest, paginate

READERS = (Role.admin, Role.finance, Role.coordinator)
EDITORS = (Role.admin, Role.coordinator)


def to_read(org: Organization) -> OrganizationRead:
    return OrganizationRead.model_validate(org, from_attributes=True)


async def get_visible(db: AsyncSession, principal: Principal, org_id: uuid.UUID) -> Organization:
    """The organization if the caller may see it; otherwise NotFound (never a hint it exists)."""
    require_role(principal, READERS, "read organizations")
    stmt, parameters = _BY_ID.for_principal(principal, org_id=org_id)
    org: Organization = await crud.one_or_404(
        db, stmt, f"Organization {org_id} not found", parameters
    )
    return org


# Every route under /v1/organizations/{id} looks its organization up first: built once per
# kind of caller (see ScopedStatement); a request brings the organization's id.
_BY_ID = ScopedStatement(
    select(Organization).where(col(Organization.id) == bindparam("org_id")),
    organization_column=Organization.id,
)


async def create(
    db: AsyncSession, principal: Principal, data: OrganizationCreate
) -> OrganizationRead:
    require_role(principal, (Role.admin,), "create organizations")
    org = Organization.model_validate(data)
    return await crud.create(
        db, principal, org, action="organization.created", to_read=to_read, organization_id=org.id
    )


async def list_organizations(
    db: AsyncSession, principal: Principal, page: PageRequest
) -> Page[OrganizationRead]:
    require_role(principal, READERS, "list organizations")
    stmt = scope_to_organizations(select(Organization), principal, Organization.id)
    return await paginate(db, stmt, page, to_read)


async def update(
    db: AsyncSession, principal: Principal, org: Organization, changes: OrganizationUpdate
) -> OrganizationRead:
    """Deactivating (`active: false`, admin) revokes every credential tied to the organization
    at once: its coordinators' keys and its calendar feeds. Reactivating brings none back."""
    require_role(principal, EDITORS, "change organizations")
    fields = changes.model_dump(exclude_unset=True)
    if principal.role != Role.admin and (blocked := PROVIDER_ONLY_FIELDS & fields.keys()):
        raise Forbidden(f"Only the provider may change {', '.join(sorted(blocked))}")
    read = await crud.update(
        db,
        principal,
        org,
        fields,
        action="organization.updated",
        to_read=to_read,
        organization_id=org.id,
    )
    if fields.get("active") is False:
        await credentials.revoke_for_organization(
            db, principal, org.id, reason=RevocationReason.organization_deactivated
        )
    return read


def location_to_read(location: Location) -> LocationRead:
    return LocationRead.model_validate(location, from_attributes=True)


async def add_location(
    db: AsyncSession, principal: Principal, org: Organization, data: LocationCreate
) -> LocationRead:
    require_role(principal, EDITORS, "add locations")
    location = Location.model_validate(data, update={"organization_id": org.id})
    return await crud.create(
        db, principal, location, action="location.created", to_read=location_to_read
    )


async def list_locations(
    db: AsyncSession, principal: Principal, org: Organization, page: PageRequest
) -> Page[LocationRead]:
    stmt = scope_to_organizations(
        select(Location).where(col(Location.organization_id) == org.id),
        principal,
        Location.organization_id,
    )
    return await paginate(db, stmt, page, location_to_read)
