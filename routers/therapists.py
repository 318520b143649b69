from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, status

from models.base import Page
from models.therapists import (
    AvailabilityWindow,
    TherapistCreate,
    TherapistRead,
    TherapistUpdate,
    TimeOffCreate,
    TimeOffRead,
)
from routers.deps import CurrentPrincipal, DbSession, PageParams, TherapistInPath
from service.catalog import erasure, therapists

router = APIRouter(prefix="/v1/therapists", tags=["therapists"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_therapist(
    body: TherapistCreate, db: DbSession, principal: CurrentPrincipal
) -> TherapistRead:
    """Add a therapist (admin)."""
    return await therapists.create(db, principal, body)


@router.get("")
async def list_therapists(
    db: DbSession,
    principal: CurrentPrincipal,
    page: PageParams,
    active: Annotated[bool | None, Query()] = None,
) -> Page[TherapistRead]:
    """Therapists: all for admin and finance; a therapist sees only themself."""
    return await therapists.list_therapists(db, principal, page, active=active)


@router.get("/{therapist_id}")
async def get_therapist(therapist: TherapistInPath) -> TherapistRead:
    """One therapist."""
    return therapists.to_read(therapist)


@router.patch("/{therapist_id}")
async def update_therapist(
    therapist: TherapistInPath, body: TherapistUpdate, db: DbSession, principal: CurrentPrincipal
) -> TherapistRead:
    """Change the fields sent (admin)."""
    return await therapists.update(db, principal, therapist, body)


@router.post("/{therapist_id}/erase")
async def erase_therapist(
    therapist: TherapistInPath, db: DbSession, principal: CurrentPrincipal
) -> TherapistRead:
    """Erase a former therapist's personal data (admin): name, email and professional details
    become a tombstone (`name` "Former therapist", `email` `erased-<id>@erased.invalid`,
    `erased_at` set), availability and time off are deleted, and copies in the audit trail,
    webhook payloads and idempotent replays are scrubbed. Sessions, programs and invoices keep
    the therapist's id, so every total still adds up. 409 while the therapist is active, has
    scheduled sessions still to come, or was already erased."""
    return await erasure.erase(db, principal, therapist)


@router.get("/{therapist_id}/availability")
async def get_availability(therapist: TherapistInPath, db: DbSession) -> Page[AvailabilityWindow]:
    """Weekly availability windows in the therapist's own time zone, Monday first."""
    windows = await therapists.availability(db, therapist)
    return Page(data=windows, next_cursor=None)


@router.put("/{therapist_id}/availability")
async def replace_availability(
    therapist: TherapistInPath,
    windows: Annotated[list[AvailabilityWindow], Body(max_length=100)],
    db: DbSession,
    principal: CurrentPrincipal,
) -> Page[AvailabilityWindow]:
    """Replace the whole weekly availability with the windows sent (a JSON list of
    `{weekday, start, end}`); windows on the same day may not overlap."""
    saved = await therapists.replace_availability(db, principal, therapist, windows)
    return Page(data=saved, next_cursor=None)


@router.post("/{therapist_id}/time-off", status_code=status.HTTP_201_CREATED)
async def create_time_off(
    therapist: TherapistInPath, body: TimeOffCreate, db: DbSession, principal: CurrentPrincipal
) -> TimeOffRead:
    """Record a period the therapist cannot work."""
    return await therapists.add_time_off(db, principal, therapist, body)


@router.get("/{therapist_id}/time-off")
async def list_time_off(
    therapist: TherapistInPath, db: DbSession, page: PageParams
) -> Page[TimeOffRead]:
    """The therapist's recorded time off."""
    return await therapists.list_time_off(db, therapist, page)
