from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query

from models.reports import RevenueReport, UtilizationReport
from routers.deps import AppSettings, CurrentPrincipal, DbSession
from service.billing import exports
from service.reports import utilization

router = APIRouter(prefix="/v1/reports", tags=["reports"])


@router.get("/utilization")
async def utilization_report(
    db: DbSession,
    principal: CurrentPrincipal,
    start: Annotated[date, Query(alias="from")],
    end: Annotated[date, Query(alias="to")],
) -> UtilizationReport:
    """Per therapist over the local dates `from`..`to` (inclusive): available, scheduled and
    delivered minutes and cancelled sessions (admin, finance)."""
    return await utilization.utilization(db, principal, start=start, end=end)


@router.get("/revenue")
async def revenue_report(
    db: DbSession,
    principal: CurrentPrincipal,
    settings: AppSettings,
    start: Annotated[date, Query(alias="from")],
    end: Annotated[date, Query(alias="to")],
) -> RevenueReport:
    """Issued invoices by organization, currency and month of issue (provider's zone):
    invoiced, credited, paid and outstanding cents (admin, finance)."""
    return await exports.revenue(db, principal, start=start, end=end, settings=settings)
