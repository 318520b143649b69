from __future__ import annotations

from fastapi import APIRouter

from models.reports import RevenueReport, UtilizationReport
from routers.deps import AppSettings, CurrentPrincipal, Dates, DbSession
from service.billing import exports
from service.reports import utilization

router = APIRouter(prefix="/v1/reports", tags=["reports"])


@router.get("/utilization")
async def utilization_report(
    db: DbSession,
    principal: CurrentPrincipal,
    period: Dates,
) -> UtilizationReport:
    """Per therapist over the local dates `from`..`to` (inclusive): available, scheduled and
    delivered minutes and cancelled sessions (admin, finance)."""
    return await utilization.utilization(db, principal, start=period.start, end=period.end)


@router.get("/revenue")
async def revenue_report(
    db: DbSession,
    principal: CurrentPrincipal,
    settings: AppSettings,
    period: Dates,
) -> RevenueReport:
    """Issued invoices by organization, currency and month of issue (provider's zone):
    invoiced, credited, paid and outstanding cents (admin, finance)."""
    return await exports.revenue(
        db, principal, start=period.start, end=period.end, settings=settings
    )
