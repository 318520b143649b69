"""Changing programs: edits, series changes of a confirmed program from an effective date
(completed, cancelled and individually rescheduled sessions are kept) and cancellation. Each
use case is one function here; the rules, checks and writes are below (rules, series)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from models.base import utcnow
from models.organizations import Location
from models.programs import (
    CancelProgram,
    Modality,
    Program,
    ProgramRead,
    ProgramStatus,
    ProgramUpdate,
)
from models.sessions import CancelledBy
from models.types import Role
from service.core.auth import Principal, require_role
from service.core.errors import FieldError, InvalidState, ValidationFailed
from service.core.settings import Settings
from service.programs import records, rules, series
from service.programs.staffing_check import active_therapist

PLAIN_FIELDS = ("title", "focus_areas", "participants", "location_id", "video_url")
SERIES_FIELDS = frozenset({"schedule", "rate_cents", "therapist_id"})
CHANGEABLE = (ProgramStatus.requested, ProgramStatus.confirmed)


async def update(
    db: AsyncSession,
    principal: Principal,
    program: Program,
    data: ProgramUpdate,
    *,
    settings: Settings,
) -> ProgramRead:
    """Apply the fields sent. A requested program simply takes them (a new therapist is
    checked against its plan); a confirmed one changes its series from `effective_date`."""
    require_role(principal, records.STAFF, "change programs")
    if program.status not in CHANGEABLE:
        raise InvalidState(f"A {program.status} program cannot be changed")
    fields = data.model_dump(exclude_unset=True)
    effective_given = fields.pop("effective_date", None)
    errors = await _field_errors(db, program, data, fields)
    if errors:
        raise ValidationFailed(errors)
    before = records.to_read(program)
    for name in PLAIN_FIELDS:
        if name in fields:
            setattr(program, name, fields[name])
    if program.status == ProgramStatus.confirmed and SERIES_FIELDS & fields.keys():
        effective = rules.effective_date(program, effective_given, required=True)
        await _change_series(db, principal, program, data, fields, effective, settings)
    else:
        await _change_plan(db, principal, program, data, fields, settings)
    return await records.record_change(db, principal, program, before, "program.updated")


async def _field_errors(
    db: AsyncSession, program: Program, data: ProgramUpdate, fields: dict[str, Any]
) -> list[FieldError]:
    errors: list[FieldError] = []
    if "participants" in fields:
        errors += rules.participant_errors(
            await records.offering_of(db, program), fields["participants"]
        )
    if "location_id" in fields or "video_url" in fields:
        location_id = fields.get("location_id", program.location_id)
        errors += rules.place_errors(
            Modality(program.modality),
            organization_id=program.organization_id,
            location_id=location_id,
            location=await db.get(Location, location_id) if location_id else None,
            video_url=fields.get("video_url", program.video_url),
        )
    if data.schedule is not None and "schedule" in fields:
        errors += rules.schedule_errors(
            data.schedule,
            earliest=None,
            duration=data.schedule.duration_minutes or program.duration_minutes,
            holiday_region=await records.holiday_region(db, program),
        )
    return errors


async def _change_plan(
    db: AsyncSession,
    principal: Principal,
    program: Program,
    data: ProgramUpdate,
    fields: dict[str, Any],
    settings: Settings,
) -> None:
    """A program with no sessions yet (or a confirmed one's non-series fields)."""
    if "therapist_id" in fields:
        await series.staff_plan(
            db,
            principal,
            program,
            await active_therapist(db, fields["therapist_id"]),
            override=data.override,
            horizon_weeks=settings.horizon_weeks,
        )
    if data.schedule is not None:
        rules.apply_schedule(program, data.schedule)
    if "rate_cents" in fields:
        program.rate_cents = fields["rate_cents"]


async def _change_series(
    db: AsyncSession,
    principal: Principal,
    program: Program,
    data: ProgramUpdate,
    fields: dict[str, Any],
    effective: Any,
    settings: Settings,
) -> None:
    """Rebuild a confirmed program from `effective` on: the rate, then the therapist, then the
    schedule (which is checked against the therapist the program has by then)."""
    if "rate_cents" in fields:
        await series.reprice(db, program, int(fields["rate_cents"]), effective)
    if data.therapist_id is not None and "therapist_id" in fields:
        therapist = await active_therapist(db, data.therapist_id)
        await series.hand_over(db, principal, program, therapist, effective, override=data.override)
    if data.schedule is not None and "schedule" in fields:
        await series.replan(
            db,
            principal,
            program,
            data.schedule,
            effective,
            override=data.override,
            horizon_weeks=settings.horizon_weeks,
        )


async def cancel(
    db: AsyncSession, principal: Principal, program: Program, data: CancelProgram
) -> ProgramRead:
    """Cancel from `effective_date` on: later sessions are cancelled (late, and billable, when
    the organization cancels inside the offering's notice window); earlier ones are kept."""
    require_role(principal, records.BOOKERS, "cancel programs")
    if program.status not in CHANGEABLE:
        raise InvalidState(f"A {program.status} program cannot be cancelled")
    effective = rules.effective_date(program, data.effective_date, required=True)
    offering = await records.offering_of(db, program)
    before = records.to_read(program)
    now = utcnow()
    await series.cancel_from(
        db,
        program,
        effective,
        by=CancelledBy.organization if principal.role == Role.coordinator else CancelledBy.provider,
        notice_hours=offering.cancellation_notice_hours,
        reason=data.reason,
        now=now,
    )
    program.status = ProgramStatus.cancelled.value
    program.cancel_reason, program.cancelled_at = data.reason, now
    return await records.record_change(db, principal, program, before, "program.cancelled")
