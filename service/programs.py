"""Programs: booking, staffing, confirmation (which materializes the sessions), series changes
and cancellation. Every staffing change is conflict-checked before anything is written."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.base import Page, utcnow
from models.offerings import Offering
from models.organizations import Location, Organization
from models.programs import (
    AssignTherapist,
    CancelProgram,
    ConfirmProgram,
    Modality,
    Program,
    ProgramCreate,
    ProgramRead,
    ProgramStatus,
    ProgramSummary,
    ProgramUpdate,
    Schedule,
    SuggestionList,
)
from models.sessions import Session, SessionStatus
from models.therapists import Therapist
from models.types import OfferingFormat, Role
from service import audit, organizations
from service.auth import Principal, require_role, scope_to_organizations
from service.errors import FieldError, InvalidState, NotFound, ValidationFailed
from service.pagination import PageRequest, paginate
from service.scheduling import materialize, recurrence, staffing, suggestions
from service.scheduling.conflicts import Slot
from service.settings import get_settings

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


def _schedule_errors(
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
    errors += await _place_errors(db, org, data.modality, data.location_id, data.video_url)
    if principal.role != Role.admin and data.rate_cents is not None:
        errors.append(
            FieldError("rate_cents", "only the provider sets a program's rate", "provider_only")
        )
    duration = data.schedule.duration_minutes or offering.duration_minutes
    earliest = (
        None if principal.role == Role.admin else materialize.local_today(data.schedule.timezone)
    )
    errors += _schedule_errors(
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
    return read


async def _place_errors(
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


async def _holiday_region(db: AsyncSession, program: Program) -> str | None:
    org = await db.get(Organization, program.organization_id)
    return org.holiday_region if org else None


async def _planned(
    db: AsyncSession, program: Program, *, after: date | None = None
) -> list[recurrence.Occurrence]:
    """The whole series for a COUNT or UNTIL rule (at most 500 sessions or two years); an
    open-ended rule up to the rolling horizon, counted from today or the start if later."""
    until = None
    if recurrence.is_open_ended(program.rrule):
        first_day = max(materialize.local_today(program.timezone), program.start_date)
        until = materialize.horizon_end(first_day, get_settings().horizon_weeks)
    return materialize.plan(
        program, holiday_region=await _holiday_region(db, program), until=until, after=after
    )


async def _active_therapist(db: AsyncSession, therapist_id: uuid.UUID) -> Therapist:
    therapist = await db.get(Therapist, therapist_id)
    if therapist is None or not therapist.active:
        raise ValidationFailed(
            [FieldError("therapist_id", "no such active therapist", "not_found")]
        )
    return therapist


async def _record(
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
    return after


def _future_sessions(program: Program, effective: date) -> tuple[ColumnElement[bool], ...]:
    """Scheduled sessions of the program from `effective` (a local date) on."""
    return (
        col(Session.program_id) == program.id,
        col(Session.status) == SessionStatus.scheduled.value,
        col(Session.starts_at) >= materialize.local_midnight(effective, program.timezone),
    )


def _effective(program: Program, given: date | None, *, required: bool) -> date:
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


async def _require_staffable(
    db: AsyncSession,
    principal: Principal,
    program: Program,
    therapist: Therapist,
    proposals: list[staffing.Proposal],
    *,
    override: bool,
    ignored: list[uuid.UUID] | None = None,
) -> None:
    offering = await db.get(Offering, program.offering_id)
    assert offering is not None
    await staffing.require_staffable(
        db,
        principal,
        therapist=therapist,
        offering=offering,
        proposals=proposals,
        ignored_session_ids=ignored or [],
        override=override,
        audit_entity=("program", program.id, program.organization_id),
    )


def _proposals(planned: list[recurrence.Occurrence]) -> list[staffing.Proposal]:
    return [staffing.Proposal(Slot(o.starts_at, o.ends_at)) for o in planned]


async def _hand_over(
    db: AsyncSession,
    principal: Principal,
    program: Program,
    therapist: Therapist,
    effective: date,
    *,
    override: bool,
) -> None:
    """Give the program's scheduled sessions from `effective` on to another therapist."""
    future = (
        (
            await db.execute(
                select(Session).where(*_future_sessions(program, effective)).with_for_update()
            )
        )
        .scalars()
        .all()
    )
    await _require_staffable(
        db,
        principal,
        program,
        therapist,
        [staffing.Proposal(Slot(s.starts_at, s.ends_at), s.id) for s in future],
        override=override,
        ignored=[s.id for s in future],
    )
    await db.execute(
        sa.update(Session)
        .where(col(Session.id).in_([s.id for s in future]))
        .values(therapist_id=therapist.id, sequence=Session.sequence + 1, updated_at=utcnow())
    )
    program.therapist_id = therapist.id


async def assign(
    db: AsyncSession, principal: Principal, program: Program, data: AssignTherapist
) -> ProgramRead:
    """Staff a requested program, or hand a confirmed one's future sessions to someone else."""
    require_role(principal, STAFF, "assign therapists")
    therapist = await _active_therapist(db, data.therapist_id)
    before = to_read(program)
    if program.status == ProgramStatus.requested:
        planned = await _planned(db, program)
        await _require_staffable(
            db, principal, program, therapist, _proposals(planned), override=data.override
        )
        program.therapist_id = therapist.id
    elif program.status == ProgramStatus.confirmed:
        effective = _effective(program, data.effective_date, required=False)
        await _hand_over(db, principal, program, therapist, effective, override=data.override)
    else:
        raise InvalidState(f"A {program.status} program cannot be staffed")
    return await _record(db, principal, program, before, "program.assigned")


async def confirm(
    db: AsyncSession, principal: Principal, program: Program, data: ConfirmProgram
) -> ProgramRead:
    """Confirm a staffed program: its sessions (to the horizon, for open-ended ones) are
    written in one statement, or nothing is written and every conflict is listed."""
    require_role(principal, STAFF, "confirm programs")
    if program.status != ProgramStatus.requested:
        raise InvalidState(f"A {program.status} program cannot be confirmed")
    if program.therapist_id is None:
        raise InvalidState("Assign a therapist before confirming the program")
    planned = await _planned(db, program)
    if not planned:
        raise ValidationFailed(
            [FieldError("schedule", "the schedule produces no sessions", "empty_schedule")]
        )
    therapist = await db.get(Therapist, program.therapist_id)
    assert therapist is not None
    await _require_staffable(
        db, principal, program, therapist, _proposals(planned), override=data.override
    )
    before = to_read(program)
    await materialize.materialize(db, program, planned)
    program.status = ProgramStatus.confirmed.value
    return await _record(db, principal, program, before, "program.confirmed")


async def update(
    db: AsyncSession, principal: Principal, program: Program, data: ProgramUpdate
) -> ProgramRead:
    require_role(principal, STAFF, "change programs")
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
        errors += await _place_errors(
            db,
            org,
            Modality(program.modality),
            fields.get("location_id", program.location_id),
            fields.get("video_url", program.video_url),
        )
    if data.schedule is not None and "schedule" in fields:
        errors += _schedule_errors(
            data.schedule,
            earliest=None,
            duration=data.schedule.duration_minutes or program.duration_minutes,
            holiday_region=await _holiday_region(db, program),
        )
    if errors:
        raise ValidationFailed(errors)
    before = to_read(program)
    for name in ("title", "focus_areas", "participants", "location_id", "video_url"):
        if name in fields:
            setattr(program, name, fields[name])
    series = {"schedule", "rate_cents", "therapist_id"} & fields.keys()
    if program.status == ProgramStatus.requested or not series:
        if "therapist_id" in fields:
            therapist = await _active_therapist(db, fields["therapist_id"])
            planned = await _planned(db, program)
            await _require_staffable(
                db, principal, program, therapist, _proposals(planned), override=data.override
            )
            program.therapist_id = therapist.id
        if data.schedule is not None:
            _apply_schedule(program, data.schedule)
        if "rate_cents" in fields:
            program.rate_cents = fields["rate_cents"]
        return await _record(db, principal, program, before, "program.updated")
    effective = _effective(program, effective_given, required=True)
    await _change_series(db, principal, program, data, fields, effective)
    return await _record(db, principal, program, before, "program.updated")


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
            .where(*_future_sessions(program, effective))
            .values(rate_cents=program.rate_cents)
        )
    if data.therapist_id is not None and "therapist_id" in fields:
        therapist = await _active_therapist(db, data.therapist_id)
        await _hand_over(db, principal, program, therapist, effective, override=data.override)
    if data.schedule is not None and "schedule" in fields:
        await db.execute(
            sa.delete(Session).where(
                *_future_sessions(program, effective), col(Session.rescheduled).is_(False)
            )
        )
        _apply_schedule(program, data.schedule)
        planned = await _planned(db, program, after=effective)
        current = await db.get(Therapist, program.therapist_id)
        assert current is not None
        await _require_staffable(
            db, principal, program, current, _proposals(planned), override=data.override
        )
        await materialize.materialize(db, program, planned)


async def cancel(
    db: AsyncSession, principal: Principal, program: Program, data: CancelProgram
) -> ProgramRead:
    """Cancel from `effective_date` on: later sessions are cancelled (late, and billable, when
    the organization cancels inside the offering's notice window); earlier ones are kept."""
    require_role(principal, BOOKERS, "cancel programs")
    if program.status not in (ProgramStatus.requested, ProgramStatus.confirmed):
        raise InvalidState(f"A {program.status} program cannot be cancelled")
    effective = _effective(program, data.effective_date, required=True)
    offering = await db.get(Offering, program.offering_id)
    assert offering is not None
    before = to_read(program)
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
        .where(*_future_sessions(program, effective))
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
    return await _record(db, principal, program, before, "program.cancelled")


async def summary(db: AsyncSession, principal: Principal, program: Program) -> ProgramSummary:
    result: Any = await db.execute(
        select(
            col(Session.status).label("status"),
            func.count().label("sessions"),
            func.coalesce(func.sum(Session.attendance), 0).label("attended"),
            func.count(col(Session.invoice_id)).label("billed"),
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


async def suggest_therapists(
    db: AsyncSession, principal: Principal, program: Program
) -> SuggestionList:
    """Active therapists ranked for the whole program: eligible ones first, by score."""
    require_role(principal, STAFF, "see staffing suggestions")
    if program.status not in (ProgramStatus.requested, ProgramStatus.confirmed):
        raise InvalidState(f"A {program.status} program is not being staffed")
    offering = await db.get(Offering, program.offering_id)
    assert offering is not None
    planned = await _planned(db, program) if program.status == ProgramStatus.requested else []
    return SuggestionList(data=await suggestions.rank(db, program, offering, planned))
