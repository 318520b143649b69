"""The caller's own view: who they are, and for a therapist their programs and sessions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from models.api_keys import Me
from models.base import Page
from models.sessions import SessionStatus
from models.therapist_view import MyProgramRead, MySessionRead, ObservationDueRead
from models.types import DateOrInstant
from routers.deps import AppSettings, CurrentPrincipal, DbSession, PageParams
from service.programs import therapist_view

router = APIRouter(prefix="/v1")


@router.get("/me", tags=["me"])
async def get_me(principal: CurrentPrincipal) -> Me:
    """The role and scope of the API key making the request."""
    return Me(
        api_key_id=principal.key_id,
        name=principal.name,
        role=principal.role,
        organization_id=principal.organization_id,
        therapist_id=principal.therapist_id,
    )


@router.get("/me/programs", tags=["me"])
async def list_my_programs(
    db: DbSession, principal: CurrentPrincipal, page: PageParams
) -> Page[MyProgramRead]:
    """A therapist's own programs: organization, place or video link, participants, schedule.
    No rates: therapists see no money."""
    return await therapist_view.my_programs(db, principal, page)


@router.get("/me/sessions", tags=["me"])
async def list_my_sessions(
    db: DbSession,
    principal: CurrentPrincipal,
    page: PageParams,
    start: Annotated[DateOrInstant | None, Query(alias="from")] = None,
    end: Annotated[DateOrInstant | None, Query(alias="to")] = None,
    status: SessionStatus | None = None,
) -> Page[MySessionRead]:
    """A therapist's own sessions by start time, with where to be and for whom
    (`from`/`to` as for /v1/sessions)."""
    return await therapist_view.my_sessions(
        db, principal, page, start=start, end=end, status=status
    )


@router.get("/me/observations-due", tags=["me"])
async def list_my_observations_due(
    db: DbSession, principal: CurrentPrincipal, page: PageParams, settings: AppSettings
) -> Page[ObservationDueRead]:
    """A therapist's completed sessions still waiting for their observation, oldest first,
    while the window (ENSEMBLE_OBSERVATION_WINDOW_DAYS after the session) is open."""
    return await therapist_view.observations_due(
        db, principal, page, window_days=settings.observation_window_days
    )
