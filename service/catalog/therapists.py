"""Therapists, their weekly availability and time off.

Admins manage therapists; finance reads them; a therapist sees (and keeps the calendar of) only
their own record. Coordinators do not browse the provider's staff.
"""

from __future__ import annotations

import uuid

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.base import Page
from models.therapists import (
    AvailabilityRow,
    AvailabilityWindow,
    Therapist,
    TherapistCreate,
    TherapistRead,
    TherapistUpdate,
    TimeOff,
    TimeOffCreate,
    TimeOffRead,
    WeeklyAvailability,
)
from models.types import Role, Weekday, day_minute, hhmm
from service.catalog import credentials
from service.catalog.credentials import RevocationReason
from service.core import audit, crud
from service.core.auth import Principal, require_role, scope_to_therapist
from service.core.errors import FieldError, InvalidState, ValidationFailed
from service.core.pagination import PageRequest, paginate

READERS = (Role.admin, Role.finance, Role.therapist)
# Availability and time off are the therapist's own calendar: they may keep it themselves.
CALENDAR_EDITORS = (Role.admin, Role.therapist)
WEEKDAY_ORDER = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")


def to_read(therapist: Therapist) -> TherapistRead:
    return TherapistRead.model_validate(therapist, from_attributes=True)


async def get_visible(db: AsyncSession, principal: Principal, therapist_id: uuid.UUID) -> Therapist:
    require_role(principal, READERS, "read therapists")
    stmt = scope_to_therapist(
        select(Therapist).where(col(Therapist.id) == therapist_id), principal, Therapist.id
    )
    therapist: Therapist = await crud.one_or_404(db, stmt, f"Therapist {therapist_id} not found")
    return therapist


async def create(db: AsyncSession, principal: Principal, data: TherapistCreate) -> TherapistRead:
    require_role(principal, (Role.admin,), "create therapists")
    therapist = Therapist.model_validate(data)
    return await crud.create(db, principal, therapist, action="therapist.created", to_read=to_read)


async def list_therapists(
    db: AsyncSession, principal: Principal, page: PageRequest, *, active: bool | None = None
) -> Page[TherapistRead]:
    require_role(principal, READERS, "list therapists")
    stmt = scope_to_therapist(select(Therapist), principal, Therapist.id)
    if active is not None:
        stmt = stmt.where(col(Therapist.active) == active)
    return await paginate(db, stmt, page, to_read)


async def update(
    db: AsyncSession, principal: Principal, therapist: Therapist, changes: TherapistUpdate
) -> TherapistRead:
    """Deactivating (`active: false`) revokes every credential tied to the therapist at once;
    reactivating brings none back. An erased therapist is a tombstone and changes no more."""
    require_role(principal, (Role.admin,), "change therapists")
    if therapist.erased_at is not None:
        raise InvalidState(f"Therapist {therapist.id} has been erased")
    fields = changes.model_dump(exclude_unset=True)
    read = await crud.update(
        db, principal, therapist, fields, action="therapist.updated", to_read=to_read
    )
    if fields.get("active") is False:
        await credentials.revoke_for_therapist(
            db, principal, therapist.id, reason=RevocationReason.therapist_deactivated
        )
    return read


def _check_no_overlap(windows: list[AvailabilityWindow]) -> None:
    """Every window that starts before an earlier window of the same day has ended is named."""
    errors = []
    reach: dict[Weekday, AvailabilityWindow] = {}  # per day, the window that ends last so far
    ordered = sorted(enumerate(windows), key=lambda iw: (iw[1].weekday, day_minute(iw[1].start)))
    for index, window in ordered:
        furthest = reach.get(window.weekday)
        if furthest is not None and day_minute(window.start) < day_minute(furthest.end):
            span = f"{furthest.weekday} {furthest.start}-{furthest.end}"
            errors.append(FieldError(f"{index}.start", f"overlaps the window {span}", "overlap"))
        if furthest is None or day_minute(window.end) > day_minute(furthest.end):
            reach[window.weekday] = window
    if errors:
        raise ValidationFailed(errors)


async def availability(db: AsyncSession, therapist: Therapist) -> list[AvailabilityWindow]:
    rows = (
        (
            await db.execute(
                select(AvailabilityRow).where(col(AvailabilityRow.therapist_id) == therapist.id)
            )
        )
        .scalars()
        .all()
    )
    windows = [
        AvailabilityWindow(
            weekday=Weekday(r.weekday), start=hhmm(r.start_minute), end=hhmm(r.end_minute)
        )
        for r in rows
    ]
    return sorted(windows, key=lambda w: (WEEKDAY_ORDER.index(w.weekday), day_minute(w.start)))


async def replace_availability(
    db: AsyncSession,
    principal: Principal,
    therapist: Therapist,
    windows: list[AvailabilityWindow],
) -> list[AvailabilityWindow]:
    """Replace the whole weekly availability in one statement pair (delete, batched insert)."""
    require_role(principal, CALENDAR_EDITORS, "change availability")
    _check_no_overlap(windows)
    before = await availability(db, therapist)
    await db.execute(
        delete(AvailabilityRow).where(col(AvailabilityRow.therapist_id) == therapist.id)
    )
    if windows:
        await db.execute(
            insert(AvailabilityRow),
            [
                {
                    "id": uuid.uuid4(),
                    "therapist_id": therapist.id,
                    "weekday": w.weekday.value,
                    "start_minute": day_minute(w.start),
                    "end_minute": day_minute(w.end),
                }
                for w in windows
            ],
        )
    after = await availability(db, therapist)
    await audit.record_change(
        db,
        principal,
        "therapist.availability_replaced",
        therapist,
        before=WeeklyAvailability(windows=before),
        after=WeeklyAvailability(windows=after),
    )
    return after


def time_off_to_read(row: TimeOff) -> TimeOffRead:
    return TimeOffRead.model_validate(row, from_attributes=True)


async def add_time_off(
    db: AsyncSession, principal: Principal, therapist: Therapist, data: TimeOffCreate
) -> TimeOffRead:
    require_role(principal, CALENDAR_EDITORS, "record time off")
    row = TimeOff.model_validate(data, update={"therapist_id": therapist.id})
    db.add(row)
    await db.flush()
    read = time_off_to_read(row)
    await audit.record_change(db, principal, "therapist.time_off_added", therapist, after=read)
    return read


async def list_time_off(
    db: AsyncSession, therapist: Therapist, page: PageRequest
) -> Page[TimeOffRead]:
    stmt = select(TimeOff).where(col(TimeOff.therapist_id) == therapist.id)
    return await paginate(db, stmt, page, time_off_to_read)
