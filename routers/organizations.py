from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from models.base import Page
from models.organizations import (
    LocationCreate,
    LocationRead,
    OrganizationCreate,
    OrganizationRead,
    OrganizationUpdate,
)
from models.outcomes import OrganizationOutcomes
from routers.deps import (
    AppSettings,
    CurrentPrincipal,
    Dates,
    DbSession,
    OrganizationInPath,
    PageParams,
)
from service.catalog import organizations
from service.reports import outcomes

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


@router.get("/{organization_id}/outcomes")
async def organization_outcomes(
    organization_id: uuid.UUID,
    db: DbSession,
    principal: CurrentPrincipal,
    settings: AppSettings,
    period: Dates,
) -> OrganizationOutcomes:
    """All of the organization's programs over the local dates `from`..`to` (inclusive): as
    for a program's outcomes, rolled up (admin, or the organization's coordinators; anyone
    else 404). Rating averages are withheld under ENSEMBLE_OUTCOMES_MIN_GROUP participants or
    observations."""
    return await outcomes.organization_outcomes(
        db,
        principal,
        organization_id,
        start=period.start,
        end=period.end,
        min_group=settings.outcomes_min_group,
    )
