"""Booking a program: the coordinator's (or admin's) request, checked field by field."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from models.offerings import Offering
from models.organizations import Location, Organization
from models.programs import Program, ProgramCreate, ProgramRead
from models.types import Role
from service.catalog import organizations
from service.core import audit
from service.core.auth import Principal, require_role
from service.core.clock import local_today
from service.core.errors import FieldError, ValidationFailed
from service.programs import records, rules
from service.scheduling import plan, recurrence


async def book(db: AsyncSession, principal: Principal, data: ProgramCreate) -> ProgramRead:
    """A coordinator books for their own organization from today on; an admin for any, and may
    record a program already under way."""
    org, offering = await _checked(db, principal, data)
    program = _new_program(data, org, offering)
    db.add(program)
    await db.flush()
    read = records.to_read(program)
    await audit.record_change(db, principal, "program.requested", program, after=read)
    return read


async def preview(
    db: AsyncSession, principal: Principal, data: ProgramCreate, *, horizon_weeks: int
) -> plan.Preview:
    """The dates booking `data` would plan (checked exactly as `book` checks it, nothing
    written): holidays and excluded dates left out, make-ups marked. An open-ended rule shows
    the dates up to the rolling horizon."""
    org, offering = await _checked(db, principal, data)
    until = None
    if recurrence.is_open_ended(data.schedule.rrule):
        first_day = max(local_today(data.schedule.timezone), data.schedule.start_date)
        until = plan.horizon_end(first_day, horizon_weeks)
    duration = data.schedule.duration_minutes or offering.duration_minutes
    return plan.preview(
        plan.engine_schedule(data.schedule, duration),
        holiday_region=org.holiday_region if data.schedule.skip_holidays else None,
        until=until,
    )


async def _checked(
    db: AsyncSession, principal: Principal, data: ProgramCreate
) -> tuple[Organization, Offering]:
    require_role(principal, records.BOOKERS, "book programs")
    org = await organizations.get_visible(db, principal, data.organization_id)
    offering = await db.get(Offering, data.offering_id)
    if offering is None:
        raise ValidationFailed([FieldError("offering_id", "no such offering", "not_found")])
    location = await db.get(Location, data.location_id) if data.location_id else None
    errors = _booking_errors(principal, data, org, offering, location)
    if errors:
        raise ValidationFailed(errors)
    return org, offering


def _booking_errors(
    principal: Principal,
    data: ProgramCreate,
    org: Organization,
    offering: Offering,
    location: Location | None,
) -> list[FieldError]:
    errors = [
        *rules.participant_errors(offering, data.participants),
        *rules.place_errors(
            data.modality,
            organization_id=org.id,
            location_id=data.location_id,
            location=location,
            video_url=data.video_url,
        ),
    ]
    if principal.role != Role.admin and data.rate_cents is not None:
        errors.append(
            FieldError("rate_cents", "only the provider sets a program's rate", "provider_only")
        )
    return errors + rules.schedule_errors(
        data.schedule,
        duration=data.schedule.duration_minutes or offering.duration_minutes,
        earliest=None if principal.role == Role.admin else local_today(data.schedule.timezone),
        holiday_region=org.holiday_region,
    )


def _new_program(data: ProgramCreate, org: Organization, offering: Offering) -> Program:
    return Program(
        organization_id=org.id,
        offering_id=offering.id,
        title=data.title,
        focus_areas=[f.value for f in data.focus_areas],
        modality=data.modality.value,
        location_id=data.location_id,
        video_url=data.video_url,
        participants=data.participants,
        rate_cents=data.rate_cents if data.rate_cents is not None else offering.rate_cents,
        currency=offering.currency,
        timezone=data.schedule.timezone,
        start_date=data.schedule.start_date,
        start_time=data.schedule.start_time,
        duration_minutes=data.schedule.duration_minutes or offering.duration_minutes,
        rrule=data.schedule.rrule,
        exdates=sorted(set(data.schedule.exdates)),
        skip_holidays=data.schedule.skip_holidays,
        series_start=data.schedule.start_date,
    )
