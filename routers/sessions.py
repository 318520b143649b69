from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Query, Response

from models.base import Page
from models.observations import ObservationRead, ObservationWrite
from models.sessions import (
    CancelSession,
    CompleteSession,
    MakeUpSession,
    RescheduleSession,
    SessionRead,
    SessionStatus,
    SubstituteSession,
)
from models.types import DateOrInstant
from routers.deps import AppSettings, CurrentPrincipal, DbSession, PageParams
from service.core import encryption
from service.programs import observations, sessions
from service.programs.session_records import SessionFilters

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])


@router.get("")
async def list_sessions(
    db: DbSession,
    principal: CurrentPrincipal,
    page: PageParams,
    start: Annotated[DateOrInstant | None, Query(alias="from")] = None,
    end: Annotated[DateOrInstant | None, Query(alias="to")] = None,
    program_id: uuid.UUID | None = None,
    therapist_id: uuid.UUID | None = None,
    organization_id: uuid.UUID | None = None,
    status: SessionStatus | None = None,
) -> Page[SessionRead]:
    """Sessions by start time. `from`/`to` take dates (the sessions' local dates, inclusive)
    or date-times with an offset (`from` inclusive, `to` exclusive). Coordinators see their
    organization's sessions, therapists their own."""
    filters = SessionFilters(
        start=start,
        end=end,
        program_id=program_id,
        therapist_id=therapist_id,
        organization_id=organization_id,
        status=status,
    )
    return await sessions.list_sessions(db, principal, filters, page)


@router.get("/{session_id}")
async def get_session(
    session_id: uuid.UUID, db: DbSession, principal: CurrentPrincipal
) -> SessionRead:
    """One session, with its program's time zone."""
    return await sessions.read(db, principal, session_id)


@router.patch("/{session_id}")
async def reschedule_session(
    session_id: uuid.UUID, body: RescheduleSession, db: DbSession, principal: CurrentPrincipal
) -> SessionRead:
    """Move one scheduled session (admin); its length is kept and the therapist must be free."""
    return await sessions.reschedule(db, principal, session_id, body)


@router.post("/{session_id}/cancel")
async def cancel_session(
    session_id: uuid.UUID,
    db: DbSession,
    principal: CurrentPrincipal,
    body: Annotated[CancelSession | None, Body()] = None,
) -> SessionRead:
    """Cancel a scheduled session. The organization's cancellation inside the offering's
    notice window is `late_cancelled` (billable at the late-cancellation fee)."""
    return await sessions.cancel(db, principal, session_id, body or CancelSession())


@router.post("/{session_id}/make-up", status_code=201)
async def make_up_session(
    session_id: uuid.UUID, body: MakeUpSession, db: DbSession, principal: CurrentPrincipal
) -> SessionRead:
    """Make up a session cancelled with notice (admin, or its organization's coordinator): a
    new session at `starts_at`, checked like any session, linked both ways (`made_up_by`,
    `makes_up`) and counted once toward the contract. Once per cancelled session; a late
    cancellation or a no-show cannot be made up (409)."""
    return await sessions.make_up(db, principal, session_id, body)


@router.post("/{session_id}/complete")
async def complete_session(
    session_id: uuid.UUID, body: CompleteSession, db: DbSession, principal: CurrentPrincipal
) -> SessionRead:
    """Record a delivered session and its attendance (admin, or its therapist)."""
    return await sessions.complete(db, principal, session_id, body)


@router.post("/{session_id}/no-show")
async def mark_no_show(
    session_id: uuid.UUID, db: DbSession, principal: CurrentPrincipal
) -> SessionRead:
    """Record that nobody came (admin, or its therapist); billable like a late cancellation."""
    return await sessions.no_show(db, principal, session_id)


@router.post("/{session_id}/substitute")
async def substitute_therapist(
    session_id: uuid.UUID, body: SubstituteSession, db: DbSession, principal: CurrentPrincipal
) -> SessionRead:
    """Give one scheduled session to another therapist (admin). Overlaps, missing credentials,
    availability, time off and weekly load are checked; a refusal lists every reason."""
    return await sessions.substitute(db, principal, session_id, body)


@router.put(
    "/{session_id}/observation",
    responses={201: {"model": ObservationRead, "description": "Recorded for the first time"}},
)
async def record_observation(
    session_id: uuid.UUID,
    body: ObservationWrite,
    db: DbSession,
    principal: CurrentPrincipal,
    settings: AppSettings,
    response: Response,
) -> ObservationRead:
    """Record (201) or replace (200) the observation of a completed session: ratings 1-5 for
    the program's focus areas and an optional clinical note (encrypted at rest). The therapist
    who delivered the session may, within ENSEMBLE_OBSERVATION_WINDOW_DAYS after it, and an
    admin at any time; a session not completed, or past the window, is a 409. Anyone else gets
    a 404. Each write is audited (ratings before and after, never the note's text)."""
    observation, created = await observations.record(
        db,
        principal,
        session_id,
        body,
        keyring=encryption.keyring(settings),
        window_days=settings.observation_window_days,
    )
    if created:
        response.status_code = 201
    return observation


@router.get("/{session_id}/observation")
async def get_observation(
    session_id: uuid.UUID, db: DbSession, principal: CurrentPrincipal, settings: AppSettings
) -> ObservationRead:
    """The session's observation with its note, for the therapist who delivered it and admins
    (anyone else, or no observation yet: 404). Every read is audited."""
    return await observations.read(db, principal, session_id, keyring=encryption.keyring(settings))
