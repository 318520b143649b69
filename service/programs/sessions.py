"""Sessions: reading the calendar and the session lifecycle.

    scheduled --complete--> completed        (once it has started; attendance 0..participants)
    scheduled --no-show---> no_show          (once it has started)
    scheduled --cancel----> cancelled        (by the provider, or by the organization in time)
    scheduled --cancel----> late_cancelled   (by the organization inside the notice window)
    scheduled --reschedule-> scheduled       (conflict-checked like an assignment)
    cancelled --make-up----> cancelled + a new scheduled session for the same occurrence
                                             (once; never a late cancellation or a no-show)

Every other move is a 409 that changes nothing. A session the caller cannot see is a 404
before any role check, so a refusal never confirms that another organization's session exists.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.base import Page, utcnow
from models.billing import Invoice, InvoiceLine
from models.offerings import Offering
from models.programs import Program, ProgramStatus
from models.sessions import (
    CancelledBy,
    CancelSession,
    CompleteSession,
    MakeUpSession,
    RescheduleSession,
    Session,
    SessionRead,
    SessionStatus,
    SubstituteSession,
)
from models.therapists import Therapist
from models.types import Role
from service.core import audit
from service.core.auth import Principal, require_role, scope_to_tenant
from service.core.errors import FieldError, InvalidState, ValidationFailed
from service.core.pagination import PageRequest, paginate, row_values
from service.programs import records, series
from service.programs.session_records import (
    READ_COLUMNS,
    SessionFilters,
    get_visible,
    local_date_filter,
    one_visible,
    read_from_row,
    record_change,
    require_scheduled,
    to_read,
    visible,
    with_invoice,
)
from service.programs.staffing_check import require_staffable
from service.scheduling.conflicts import Slot
from service.scheduling.staffing import Proposal

# A session as it is read: its row, its program's zone and its live invoice line, in one
# statement. Built once: a request only narrows it (scope, filters, page).
_SESSION_ROWS = with_invoice(
    select(
        *READ_COLUMNS,
        col(Program.timezone),
        col(InvoiceLine.invoice_id),
        col(Invoice.status).label("invoice_status"),
    ).join(Program, col(Program.id) == Session.program_id)
)

_SESSION_BY_ID = visible(_SESSION_ROWS)
_ROW_KEYS = tuple(_SESSION_ROWS.selected_columns.keys())

CANCELLERS = (Role.admin, Role.coordinator)
RECORDERS = (Role.admin, Role.therapist)


async def list_sessions(
    db: AsyncSession, principal: Principal, filters: SessionFilters, page: PageRequest
) -> Page[SessionRead]:
    """Sessions the caller may see, by start time. Dates in `from`/`to` are the sessions' own
    local dates (inclusive); date-times are instants (`from` inclusive, `to` exclusive)."""
    stmt = scope_to_tenant(
        _SESSION_ROWS,
        principal,
        organization_column=Session.organization_id,
        therapist_column=Session.therapist_id,
    )
    stmt = await local_date_filter(db, stmt, filters)
    for column, value in (
        (Session.program_id, filters.program_id),
        (Session.therapist_id, filters.therapist_id),
        (Session.organization_id, filters.organization_id),
        (Session.status, filters.status),
    ):
        if value is not None:
            stmt = stmt.where(col(column) == value)
    return await paginate(
        db,
        stmt,
        page,
        lambda row: read_from_row(row_values(_ROW_KEYS, row), principal),
        order_by=Session.starts_at,
        rows="records",
        entity=Session,
    )


async def next_scheduled(
    db: AsyncSession, principal: Principal, program_ids: list[uuid.UUID]
) -> dict[uuid.UUID, SessionRead]:
    """Each of these programs' next scheduled session from now, as the caller may see it (one
    statement, whatever the number of programs)."""
    stmt = (
        select(Session, col(Program.timezone))
        .join(Program, col(Program.id) == Session.program_id)
        .where(
            col(Session.program_id).in_(program_ids),
            col(Session.status) == SessionStatus.scheduled.value,
            col(Session.starts_at) >= utcnow(),
        )
        .order_by(col(Session.program_id), col(Session.starts_at))
        .ext(distinct_on(col(Session.program_id)))
    )
    stmt = scope_to_tenant(
        stmt,
        principal,
        organization_column=Session.organization_id,
        therapist_column=Session.therapist_id,
    )
    rows = (await db.execute(stmt)).all()
    # A scheduled session is on no invoice yet.
    return {row[0].program_id: to_read(row[0], row[1]) for row in rows}


async def read(db: AsyncSession, principal: Principal, session_id: uuid.UUID) -> SessionRead:
    """One session as the caller may see it, with its invoice where they may see that."""
    row = await one_visible(db, _SESSION_BY_ID, principal, session_id)
    return read_from_row(row_values(_ROW_KEYS, row), principal)


async def reschedule(
    db: AsyncSession, principal: Principal, session_id: uuid.UUID, data: RescheduleSession
) -> SessionRead:
    """Move one session; its length is kept and its therapist must be able to take it."""
    session, program = await get_visible(db, principal, session_id, for_update=True)
    require_role(principal, (Role.admin,), "reschedule sessions")
    require_scheduled(session, "rescheduled")
    if data.starts_at <= utcnow():
        raise ValidationFailed([FieldError("starts_at", "must be in the future")])
    before = to_read(session, program.timezone)
    slot = Slot(data.starts_at, data.starts_at + (session.ends_at - session.starts_at))
    therapist = await db.get(Therapist, session.therapist_id)
    assert therapist is not None
    await require_staffable(
        db,
        principal,
        program,
        therapist,
        [Proposal(slot, session.id)],
        override=data.override,
        session=session,
    )
    session.starts_at, session.ends_at = slot.starts_at, slot.ends_at
    session.rescheduled = True
    return await record_change(db, principal, session, program, before, "session.rescheduled")


async def substitute(
    db: AsyncSession, principal: Principal, session_id: uuid.UUID, data: SubstituteSession
) -> SessionRead:
    """Give one scheduled session to another therapist, checked like any assignment."""
    session, program = await get_visible(db, principal, session_id, for_update=True)
    require_role(principal, (Role.admin,), "substitute therapists")
    require_scheduled(session, "given to another therapist")
    if data.therapist_id == session.therapist_id:
        raise InvalidState("The session already has this therapist")
    therapist = await db.get(Therapist, data.therapist_id)
    if therapist is None:
        raise ValidationFailed([FieldError("therapist_id", "no such therapist", "not_found")])
    before = to_read(session, program.timezone)
    await require_staffable(
        db,
        principal,
        program,
        therapist,
        [Proposal(Slot(session.starts_at, session.ends_at), session.id)],
        override=data.override,
        session=session,
    )
    session.therapist_id = therapist.id
    return await record_change(db, principal, session, program, before, "session.substituted")


async def cancel(
    db: AsyncSession, principal: Principal, session_id: uuid.UUID, data: CancelSession
) -> SessionRead:
    """A cancellation by the organization inside the offering's notice window is late (and
    billable at the offering's fee); the provider's, or an early one, is free."""
    session, program = await get_visible(db, principal, session_id, for_update=True)
    require_role(principal, CANCELLERS, "cancel sessions")
    require_scheduled(session, "cancelled")
    by = data.cancelled_by or (
        CancelledBy.organization if principal.role == Role.coordinator else CancelledBy.provider
    )
    if principal.role == Role.coordinator and by != CancelledBy.organization:
        raise ValidationFailed(
            [FieldError("cancelled_by", "a coordinator cancels for the organization")]
        )
    offering = await records.offering_of(db, program)
    before = to_read(session, program.timezone)
    now = utcnow()
    late = _inside_notice(session, offering, now)
    session.status = (
        SessionStatus.late_cancelled
        if by == CancelledBy.organization and late
        else SessionStatus.cancelled
    ).value
    session.cancelled_by, session.cancel_reason, session.cancelled_at = by.value, data.reason, now
    return await record_change(db, principal, session, program, before, "session.cancelled")


def _inside_notice(session: Session, offering: Offering, now: datetime) -> bool:
    return now > session.starts_at - timedelta(hours=offering.cancellation_notice_hours)


@dataclass(frozen=True)
class CancellationTerms:
    """What cancelling a scheduled session now would cost its organization: `late` inside the
    offering's notice window, billed at `late_cancel_fee_percent` of the session's rate."""

    late: bool
    notice_hours: int
    rate_cents: int
    late_cancel_fee_percent: int
    currency: str


async def cancellation_terms(
    db: AsyncSession, principal: Principal, session_id: uuid.UUID
) -> CancellationTerms:
    """The terms `cancel` would apply if the organization cancelled now (nothing written)."""
    session, program = await get_visible(db, principal, session_id)
    require_role(principal, CANCELLERS, "cancel sessions")
    require_scheduled(session, "cancelled")
    offering = await records.offering_of(db, program)
    return CancellationTerms(
        late=_inside_notice(session, offering, utcnow()),
        notice_hours=offering.cancellation_notice_hours,
        rate_cents=session.rate_cents,
        late_cancel_fee_percent=offering.late_cancel_fee_percent,
        currency=program.currency,
    )


async def make_up(
    db: AsyncSession, principal: Principal, session_id: uuid.UUID, data: MakeUpSession
) -> SessionRead:
    """Replace a session cancelled with notice by one at `starts_at` (its length, the program's
    therapist, checked like any session). The two are linked both ways and share the
    occurrence, so the contract counts them once; the make-up is kept by later series edits."""
    session, program = await get_visible(db, principal, session_id, for_update=True)
    require_role(principal, CANCELLERS, "make up sessions")
    if session.status != SessionStatus.cancelled:
        raise InvalidState(
            f"A {session.status} session cannot be made up; only one cancelled with notice can",
            session_id=str(session.id),
            session_status=session.status,
        )
    if session.made_up_by is not None:
        raise InvalidState(
            "The session has already been made up",
            session_id=str(session.id),
            made_up_by=str(session.made_up_by),
        )
    if program.status != ProgramStatus.confirmed or program.therapist_id is None:
        raise InvalidState(f"A session of a {program.status} program cannot be made up")
    last = await series.contract_end(db, program, horizon_weeks=1)
    if last is not None and session.occurrence > last:
        raise InvalidState(
            f"The session was occurrence {session.occurrence}; the contract now ends at {last}",
            session_id=str(session.id),
        )
    if data.starts_at <= utcnow():
        raise ValidationFailed([FieldError("starts_at", "must be in the future")])
    therapist = await db.get(Therapist, program.therapist_id)
    assert therapist is not None
    slot = Slot(data.starts_at, data.starts_at + (session.ends_at - session.starts_at))
    await require_staffable(
        db, principal, program, therapist, [Proposal(slot)], override=data.override
    )
    now = utcnow()
    replacement = Session(
        program_id=program.id,
        organization_id=session.organization_id,
        therapist_id=therapist.id,
        starts_at=slot.starts_at,
        ends_at=slot.ends_at,
        original_starts_at=slot.starts_at,
        occurrence=session.occurrence,
        rate_cents=session.rate_cents,
        makes_up=session.id,
        created_at=now,
        updated_at=now,
    )
    db.add(replacement)
    await db.flush()
    session.made_up_by, session.updated_at = replacement.id, now
    await db.flush()
    created = to_read(replacement, program.timezone)
    await audit.record_change(db, principal, "session.made_up", replacement, after=created)
    return created


async def _record_delivery(
    db: AsyncSession,
    principal: Principal,
    session_id: uuid.UUID,
    *,
    status: SessionStatus,
    attendance: int,
) -> SessionRead:
    session, program = await get_visible(db, principal, session_id, for_update=True)
    require_role(principal, RECORDERS, "record sessions")
    require_scheduled(
        session, "completed" if status == SessionStatus.completed else "marked no-show"
    )
    if session.starts_at > utcnow():
        raise InvalidState(
            "A session that has not started cannot be recorded yet",
            session_id=str(session.id),
            starts_at=session.starts_at.isoformat(),
        )
    if attendance > program.participants:
        raise ValidationFailed(
            [
                FieldError(
                    "attendance",
                    f"must be at most the program's {program.participants} participants",
                    "less_than_equal",
                )
            ]
        )
    before = to_read(session, program.timezone)
    session.status, session.attendance = status.value, attendance
    return await record_change(db, principal, session, program, before, f"session.{status.value}")


async def complete(
    db: AsyncSession, principal: Principal, session_id: uuid.UUID, data: CompleteSession
) -> SessionRead:
    return await _record_delivery(
        db, principal, session_id, status=SessionStatus.completed, attendance=data.attendance
    )


async def no_show(db: AsyncSession, principal: Principal, session_id: uuid.UUID) -> SessionRead:
    return await _record_delivery(
        db, principal, session_id, status=SessionStatus.no_show, attendance=0
    )
