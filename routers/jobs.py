"""The scheduler's jobs and its leader (admin)."""

from __future__ import annotations

from fastapi import APIRouter

from models.jobs import JobList
from routers.deps import AppSettings, CurrentPrincipal, DbSession
from service.jobs import state

router = APIRouter(prefix="/v1", tags=["jobs"])


@router.get("/jobs")
async def list_jobs(db: DbSession, principal: CurrentPrincipal, settings: AppSettings) -> JobList:
    """Each background job: its schedule, next run, last run and outcome; and the process that
    currently leads the scheduler (`leader`, null when none has beaten a heartbeat lately).
    Run one now with `ensemble jobs run NAME`."""
    return await state.list_jobs(db, principal, settings)
