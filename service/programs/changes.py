"""Changing programs: edits, series changes of confirmed programs from an effective date
(completed, cancelled and individually rescheduled sessions are kept) and cancellation."""

from __future__ import annotations

from datetime import date, timedelta

import sqlalchemy as sa
from sqlalchemy import case
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.base import utcnow
from models.offerings import Offering
from models.organizations import Organization
from models.programs import (
    CancelProgram,
    Modality,
    Program,
    ProgramRead,
    ProgramStatus,
    ProgramUpdate,
    Schedule,
)
from models.sessions import Session, SessionStatus
from models.therapists import Therapist
from models.types import OfferingFormat, Role
from service.core.auth import Principal, require_role
from service.core.errors import FieldError, InvalidState, ValidationFailed
from service.programs import records as programs
from service.programs import staffing as program_staffing
from service.scheduling import materialize


async def update(
    db: AsyncSession, principal: Principal, program: Program, data: ProgramUpdate
) -> ProgramRead:
    require_role(principal, programs.STAFF, "change programs")
    if program.status not in (ProgramStatus.requested, ProgramStatus.confirmed):
        raise InvalidState(f"A {program.status} program cannot be changed")
    fields = data.model_dump(exclude_unset=True)
    effective_given = fields.pop("effective_date", None)
    errors: list[FieldError] = []
    offering = await db.get(Offering, program.offering_id)
    assert offering is not None
    if "participants" in fields:
        limit = 1 if offering.format == OfferingFormat.individual else offering.max_participants
        if fields["participants"] > limit:
            errors.append(
                FieldError(
                    "participants", f"at most {limit} participant(s)", "too_many_participants"
                )
            )
    if "location_id" in fields or "video_url" in fields:
        org = await db.get(Organization, program.organization_id)
        assert org is not None
        errors += await programs.place_errors(
            db,
            org,
            Modality(program.modality),
            fields.get("location_id", program.location_id),
            fields.get("video_url", program.video_url),
        )
    if data.schedule is not None and "schedule" in fields:
        errors += programs.schedule_errors(
            data.schedule,
            earliest=None,
            duration=data.schedule.duration_minutes or program.duration_minutes,
            holiday_region=await programs.holiday_region(db, program),
        )
    if errors:
        raise ValidationFailed(errors)
    before = programs.to_read(program)
    for name in ("title", "focus_areas", "participants", "location_id", "video_url"):
        if name in fields:
            setattr(program, name, fields[name])
    series = {"schedule", "rate_cents", "therapist_id"} & fields.keys()
    if program.status == ProgramStatus.requested or not series:
        if "therapist_id" in fields:
            therapist = await program_staffing.active_therapist(db, fields["therapist_id"])
            planned = await programs.planned(db, program)
            await program_staffing.require_staffable(
                db,
                principal,
                program,
                therapist,
                program_staffing.proposals(planned),
                override=data.override,
            )
            program.therapist_id = therapist.id
        if data.schedule is not None:
            _apply_schedule(program, data.schedule)
        if "rate_cents" in fields:
            program.rate_cents = fields["rate_cents"]
        return await programs.record_change(db, principal, program, before, "program.updated")
    effective = programs.effective_date(program, effective_given, required=True)
    await _change_series(db, principal, program, data, fields, effective)
    return await programs.record_change(db, principal, program, before, "program.updated")


def _apply_schedule(program: Program, schedule: Schedule) -> None:
    program.timezone = schedule.timezone
    program.start_date = schedule.start_date
    program.start_time = schedule.start_time
    program.duration_minutes = schedule.duration_minutes or program.duration_minutes
    program.rrule = schedule.rrule
    program.exdates = sorted(set(schedule.exdates))
    program.skip_holidays = schedule.skip_holidays


async def _change_series(
    db: AsyncSession,
    principal: Principal,
    program: Program,
    data: ProgramUpdate,
    fields: dict[str, object],
    effective: date,
) -> None:
    """Rebuild a confirmed program from `effective` on. Completed, cancelled and individually
    rescheduled sessions are kept; scheduled ones from that date are replanned."""
    if "rate_cents" in fields:
        program.rate_cents = int(str(fields["rate_cents"]))
        await db.execute(
            sa.update(Session)
            .where(*programs.future_sessions(program, effective))
            .values(rate_cents=program.rate_cents)
        )
    if data.therapist_id is not None and "therapist_id" in fields:
        therapist = await program_staffing.active_therapist(db, data.therapist_id)
        await program_staffing.hand_over(
            db, principal, program, therapist, effective, override=data.override
        )
    if data.schedule is not None and "schedule" in fields:
        await db.execute(
            sa.delete(Session).where(
                *programs.future_sessions(program, effective), col(Session.rescheduled).is_(False)
            )
        )
        _apply_schedule(program, data.schedule)
        planned = await programs.planned(db, program, after=effective)
        current = await db.get(Therapist, program.therapist_id)
        assert current is not None
        await program_staffing.require_staffable(
            db,
            principal,
            program,
            current,
            program_staffing.proposals(planned),
            override=data.override,
        )
        await materialize.materialize(db, program, planned)


async def cancel(
    db: AsyncSession, principal: Principal, program: Program, data: CancelProgram
) -> ProgramRead:
    """Cancel from `effective_date` on: later sessions are cancelled (late, and billable, when
    the organization cancels inside the offering's notice window); earlier ones are kept."""
    require_role(principal, programs.BOOKERS, "cancel programs")
    if program.status not in (ProgramStatus.requested, ProgramStatus.confirmed):
        raise InvalidState(f"A {program.status} program cannot be cancelled")
    effective = programs.effective_date(program, data.effective_date, required=True)
    offering = await db.get(Offering, program.offering_id)
    assert offering is not None
    before = programs.to_read(program)
    now = utcnow()
    by_organization = principal.role == Role.coordinator
    late_before = now + timedelta(hours=offering.cancellation_notice_hours)
    status = (
        case(
            (col(Session.starts_at) < late_before, SessionStatus.late_cancelled.value),
            else_=SessionStatus.cancelled.value,
        )
        if by_organization
        else SessionStatus.cancelled.value
    )
    await db.execute(
        sa.update(Session)
        .where(*programs.future_sessions(program, effective))
        .values(
            status=status,
            cancelled_by="organization" if by_organization else "provider",
            cancel_reason=data.reason,
            cancelled_at=now,
            sequence=Session.sequence + 1,
            updated_at=now,
        )
    )
    program.status = ProgramStatus.cancelled.value
    program.cancel_reason, program.cancelled_at = data.reason, now
    return await programs.record_change(db, principal, program, before, "program.cancelled")
