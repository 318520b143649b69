"""Programs: booking and reading, and the helpers that staffing (program_staffing) and
changes (program_changes) share: the planned occurrences, effective dates, the audit record."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.base import Page, utcnow
from models.billing import InvoiceLine
from models.offerings import Offering
from models.organizations import Location, Organization
from models.programs import (
    Modality,
    Program,
    ProgramCreate,
    ProgramRead,
    ProgramStatus,
    ProgramSummary,
    Schedule,
)
from models.sessions import Session, SessionStatus
from models.types import OfferingFormat, Role
from models.webhooks import EventType
from service.catalog import organizations
from service.core import audit, outbox
from service.core.auth import Principal, require_role, scope_to_organizations
from service.core.errors import FieldError, NotFound, ValidationFailed
from service.core.pagination import PageRequest, paginate
from service.core.settings import get_settings
from service.scheduling import materialize, recurrence

READERS = (Role.admin, Role.finance, Role.coordinator)
BOOKERS = (Role.admin, Role.coordinator)
STAFF = (Role.admin,)


def to_read(program: Program) -> ProgramRead:
    data = program.model_dump()
    data["schedule"] = program.schedule().model_dump() | {
        "duration_minutes": program.duration_minutes
    }
    return ProgramRead.model_validate(data)


async def get_visible(
    db: AsyncSession, principal: Principal, program_id: uuid.UUID, *, for_update: bool = False
) -> Program:
    """Programs carry money (rates), so therapists read theirs through /v1/me/programs."""
    require_role(principal, READERS, "read programs")
    stmt = scope_to_organizations(
        select(Program).where(col(Program.id) == program_id),
        principal,
        Program.organization_id,
    )
    if for_update:
        stmt = stmt.with_for_update()
    program = (await db.execute(stmt)).scalar_one_or_none()
    if program is None:
        raise NotFound(f"Program {program_id} not found")
    return program


async def list_programs(
    db: AsyncSession,
    principal: Principal,
    page: PageRequest,
    *,
    organization_id: uuid.UUID | None = None,
    status: ProgramStatus | None = None,
) -> Page[ProgramRead]:
    require_role(principal, READERS, "list programs")
    stmt = scope_to_organizations(select(Program), principal, Program.organization_id)
    if organization_id is not None:
        stmt = stmt.where(col(Program.organization_id) == organization_id)
    if status is not None:
        stmt = stmt.where(col(Program.status) == status.value)
    return await paginate(
        db, stmt, order_by=Program.created_at, id_column=Program.id, page=page, to_read=to_read
    )


def schedule_errors(
    schedule: Schedule, *, duration: int, earliest: date | None, holiday_region: str | None
) -> list[FieldError]:
    engine_schedule = recurrence.Schedule(
        timezone=schedule.timezone,
        start_date=schedule.start_date,
        start_time=schedule.start_time,
        duration_minutes=duration,
        rrule=schedule.rrule,
        exdates=frozenset(schedule.exdates),
        skip_holidays=schedule.skip_holidays,
    )
    errors = [
        FieldError(f, m, "schedule")
        for f, m in recurrence.validate_schedule(engine_schedule, holiday_region=holiday_region)
    ]
    if earliest is not None and schedule.start_date < earliest:
        errors.append(
            FieldError("schedule.start_date", f"must be today ({earliest}) or later", "past_start")
        )
    return errors


async def book(db: AsyncSession, principal: Principal, data: ProgramCreate) -> ProgramRead:
    """A coordinator books for their own organization from today on; an admin for any, and may
    record a program already under way."""
    require_role(principal, BOOKERS, "book programs")
    org = await organizations.get_visible(db, principal, data.organization_id)
    errors: list[FieldError] = []
    offering = await db.get(Offering, data.offering_id)
    if offering is None:
        raise ValidationFailed([FieldError("offering_id", "no such offering", "not_found")])
    limit = 1 if offering.format == OfferingFormat.individual else offering.max_participants
    if data.participants > limit:
        errors.append(
            FieldError(
                "participants",
                f"{offering.name} takes at most {limit} participant(s)",
                "too_many_participants",
            )
        )
    errors += await place_errors(db, org, data.modality, data.location_id, data.video_url)
    if principal.role != Role.admin and data.rate_cents is not None:
        errors.append(
            FieldError("rate_cents", "only the provider sets a program's rate", "provider_only")
        )
    duration = data.schedule.duration_minutes or offering.duration_minutes
    earliest = (
        None if principal.role == Role.admin else materialize.local_today(data.schedule.timezone)
    )
    errors += schedule_errors(
        data.schedule, duration=duration, earliest=earliest, holiday_region=org.holiday_region
    )
    if errors:
        raise ValidationFailed(errors)
    program = Program(
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
        duration_minutes=duration,
        rrule=data.schedule.rrule,
        exdates=sorted(set(data.schedule.exdates)),
        skip_holidays=data.schedule.skip_holidays,
    )
    db.add(program)
    await db.flush()
    read = to_read(program)
    await audit.record(
        db,
        principal,
        action="program.requested",
        entity_type="program",
        entity_id=program.id,
        organization_id=program.organization_id,
        after=read,
    )
    await outbox.publish(db, EventType.program_requested, read)
    return read


async def place_errors(
    db: AsyncSession,
    org: Organization,
    modality: Modality,
    location_id: uuid.UUID | None,
    video_url: str | None,
) -> list[FieldError]:
    if modality == Modality.online:
        return (
            []
            if video_url
            else [
                FieldError("video_url", "an online program needs an https video link", "required")
            ]
        )
    if location_id is None:
        return [FieldError("location_id", "an in-person program needs a location", "required")]
    location = await db.get(Location, location_id)
    if location is None or location.organization_id != org.id:
        return [FieldError("location_id", "no such location in this organization", "not_found")]
    return []


async def holiday_region(db: AsyncSession, program: Program) -> str | None:
    org = await db.get(Organization, program.organization_id)
    return org.holiday_region if org else None


async def planned(
    db: AsyncSession, program: Program, *, after: date | None = None
) -> list[recurrence.Occurrence]:
    """The whole series for a COUNT or UNTIL rule (at most 500 sessions or two years); an
    open-ended rule up to the rolling horizon, counted from today or the start if later."""
    until = None
    if recurrence.is_open_ended(program.rrule):
        first_day = max(materialize.local_today(program.timezone), program.start_date)
        until = materialize.horizon_end(first_day, get_settings().horizon_weeks)
    return materialize.plan(
        program, holiday_region=await holiday_region(db, program), until=until, after=after
    )


async def record_change(
    db: AsyncSession, principal: Principal, program: Program, before: ProgramRead, action: str
) -> ProgramRead:
    program.updated_at = utcnow()
    await db.flush()
    after = to_read(program)
    await audit.record(
        db,
        principal,
        action=action,
        entity_type="program",
        entity_id=program.id,
        organization_id=program.organization_id,
        before=before,
        after=after,
    )
    if outbox.is_event(action):
        await outbox.publish(db, action, after)
    return after


def future_sessions(program: Program, effective: date) -> tuple[ColumnElement[bool], ...]:
    """Scheduled sessions of the program from `effective` (a local date) on."""
    return (
        col(Session.program_id) == program.id,
        col(Session.status) == SessionStatus.scheduled.value,
        col(Session.starts_at) >= materialize.local_midnight(effective, program.timezone),
    )


def effective_date(program: Program, given: date | None, *, required: bool) -> date:
    today = materialize.local_today(program.timezone)
    if given is None:
        if required:
            raise ValidationFailed(
                [
                    FieldError(
                        "effective_date",
                        "is required to change a confirmed program's schedule, rate or therapist",
                        "required",
                    )
                ]
            )
        return today
    if given < today:
        raise ValidationFailed(
            [FieldError("effective_date", f"must be today ({today}) or later", "past_date")]
        )
    return given


async def summary(db: AsyncSession, principal: Principal, program: Program) -> ProgramSummary:
    result: Any = await db.execute(
        select(
            col(Session.status).label("status"),
            func.count().label("sessions"),
            func.coalesce(func.sum(Session.attendance), 0).label("attended"),
            func.count(col(InvoiceLine.id)).label("billed"),
        )
        .select_from(Session)
        .outerjoin(
            InvoiceLine, and_(col(InvoiceLine.session_id) == Session.id, col(InvoiceLine.live))
        )
        .where(col(Session.program_id) == program.id)
        .group_by(col(Session.status))
    )
    counts: dict[str, Any] = {row.status: row for row in result}

    def sessions(status: SessionStatus) -> int:
        row = counts.get(status.value)
        return int(row.sessions) if row else 0

    delivered = sessions(SessionStatus.completed)
    attended = int(counts[SessionStatus.completed.value].attended) if delivered else 0
    return ProgramSummary(
        program_id=program.id,
        planned_sessions=sum(int(r.sessions) for r in counts.values()),
        scheduled_sessions=sessions(SessionStatus.scheduled),
        delivered_sessions=delivered,
        cancelled_sessions=sessions(SessionStatus.cancelled),
        late_cancelled_sessions=sessions(SessionStatus.late_cancelled),
        no_show_sessions=sessions(SessionStatus.no_show),
        attendance_rate=(
            round(attended / (delivered * program.participants), 4) if delivered else None
        ),
        billed_sessions=sum(int(r.billed) for r in counts.values()),
    )
