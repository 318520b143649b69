from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query

from models.reports import UtilizationReport
from routers.deps import CurrentPrincipal, DbSession, UnitOfWorkRoute
from service import reports

router = APIRouter(prefix="/v1/reports", tags=["reports"], route_class=UnitOfWorkRoute)


@router.get("/utilization")
async def utilization_report(
    db: DbSession,
    principal: CurrentPrincipal,
    start: Annotated[date, Query(alias="from")],
    end: Annotated[date, Query(alias="to")],
) -> UtilizationReport:
    """Per therapist over the local dates `from`..`to` (inclusive): available, scheduled and
    delivered minutes and cancelled sessions (admin, finance)."""
    return await reports.utilization(db, principal, start=start, end=end)
