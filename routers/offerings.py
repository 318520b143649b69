from __future__ import annotations

from fastapi import APIRouter, status

from models.base import Page
from models.offerings import OfferingCreate, OfferingRead, OfferingUpdate
from routers.deps import CurrentPrincipal, DbSession, OfferingInPath, PageParams
from service.catalog import offerings

router = APIRouter(prefix="/v1/offerings", tags=["offerings"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_offering(
    body: OfferingCreate, db: DbSession, principal: CurrentPrincipal
) -> OfferingRead:
    """Add an offering to the catalog (admin)."""
    return await offerings.create(db, principal, body)


@router.get("")
async def list_offerings(
    db: DbSession, principal: CurrentPrincipal, page: PageParams
) -> Page[OfferingRead]:
    """The catalog (admin, finance, coordinators; therapists see no prices)."""
    return await offerings.list_offerings(db, principal, page)


@router.get("/{offering_id}")
async def get_offering(offering: OfferingInPath) -> OfferingRead:
    """One offering."""
    return offerings.to_read(offering)


@router.patch("/{offering_id}")
async def update_offering(
    offering: OfferingInPath, body: OfferingUpdate, db: DbSession, principal: CurrentPrincipal
) -> OfferingRead:
    """Change the fields sent (admin). Existing programs keep their agreed rate."""
    return await offerings.update(db, principal, offering, body)
