from __future__ import annotations

from fastapi import APIRouter, status

from models.base import Page
from models.organizations import (
    LocationCreate,
    LocationRead,
    OrganizationCreate,
    OrganizationRead,
    OrganizationUpdate,
)
from routers.deps import (
    CurrentPrincipal,
    DbSession,
    OrganizationInPath,
    PageParams,
)
from service.catalog import organizations

router = APIRouter(prefix="/v1/organizations", tags=["organizations"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_organization(
    body: OrganizationCreate, db: DbSession, principal: CurrentPrincipal
) -> OrganizationRead:
    """Add a client organization (admin)."""
    return await organizations.create(db, principal, body)


@router.get("")
async def list_organizations(
    db: DbSession, principal: CurrentPrincipal, page: PageParams
) -> Page[OrganizationRead]:
    """Organizations the caller may see: all for admin and finance, their own for a coordinator."""
    return await organizations.list_organizations(db, principal, page)


@router.get("/{organization_id}")
async def get_organization(org: OrganizationInPath) -> OrganizationRead:
    """One organization; another organization's id is a 404."""
    return organizations.to_read(org)


@router.patch("/{organization_id}")
async def update_organization(
    org: OrganizationInPath, body: OrganizationUpdate, db: DbSession, principal: CurrentPrincipal
) -> OrganizationRead:
    """Change the fields sent. Coordinators may edit their own organization's contact details;
    currency, tax and payment terms are the provider's (admin)."""
    return await organizations.update(db, principal, org, body)


@router.post("/{organization_id}/locations", status_code=status.HTTP_201_CREATED)
async def create_location(
    org: OrganizationInPath, body: LocationCreate, db: DbSession, principal: CurrentPrincipal
) -> LocationRead:
    """Add a place where in-person sessions happen."""
    return await organizations.add_location(db, principal, org, body)


@router.get("/{organization_id}/locations")
async def list_locations(
    org: OrganizationInPath, db: DbSession, principal: CurrentPrincipal, page: PageParams
) -> Page[LocationRead]:
    """The organization's locations."""
    return await organizations.list_locations(db, principal, org, page)
