"""Sessions: reading the calendar and the session lifecycle.

    scheduled --complete--> completed        (once it has started; attendance 0..participants)
    scheduled --no-show---> no_show          (once it has started)
    scheduled --cancel----> cancelled        (by the provider, or by the organization in time)
    scheduled --cancel----> late_cancelled   (by the organization inside the notice window)
    scheduled --reschedule-> scheduled       (conflict-checked like an assignment)

Every other move is a 409 that changes nothing. A session the caller cannot see is a 404
before any role check, so a refusal never confirms that another organization's session exists.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Date, Select, and_, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.base import Page, utcnow
from models.billing import Invoice, InvoiceLine, InvoiceStatus
from models.offerings import Offering
from models.programs import Program
from models.sessions import (
    CancelledBy,
    CancelSession,
    CompleteSession,
    RescheduleSession,
    Session,
    SessionRead,
    SessionStatus,
    SubstituteSession,
)
from models.therapists import Therapist
from models.types import Role
from service.core import audit, outbox
from service.core.auth import Principal, require_role, scope_to_tenant
from service.core.errors import FieldError, InvalidState, NotFound, ValidationFailed
from service.core.pagination import PageRequest, paginate
from service.scheduling import staffing
from service.scheduling.conflicts import Slot

S = TypeVar("S", bound=Select)

CANCELLERS = (Role.admin, Role.coordinator)
RECORDERS = (Role.admin, Role.therapist)


@dataclass(frozen=True)
class SessionFilters:
    start: date | datetime | None = None
    end: date | datetime | None = None
    program_id: uuid.UUID | None = None
    therapist_id: uuid.UUID | None = None
    organization_id: uuid.UUID | None = None
    status: SessionStatus | None = None


def to_read(session: Session, timezone: str, invoice_id: uuid.UUID | None = None) -> SessionRead:
    return SessionRead.model_validate(
        {**session.model_dump(), "timezone": timezone, "invoice_id": invoice_id}
    )


def _with_invoice(stmt: S) -> S:
    """Join the session's live invoice line (a session's invoice is its live line's)."""
    return stmt.outerjoin(
        InvoiceLine, and_(col(InvoiceLine.session_id) == Session.id, col(InvoiceLine.live))
    ).outerjoin(Invoice, col(Invoice.id) == InvoiceLine.invoice_id)


def _invoice_seen_by(principal: Principal, invoice_id: Any, status: Any) -> uuid.UUID | None:
    """Staff see every invoice; an organization only what it was sent; therapists no billing."""
    if invoice_id is None or principal.role == Role.therapist:
        return None
    if principal.role == Role.coordinator and status == InvoiceStatus.draft.value:
        return None
    return uuid.UUID(str(invoice_id))


def _local_date(zone_column: Any) -> Any:
    """The session's calendar day in its program's time zone."""
    return cast(func.timezone(zone_column, Session.starts_at), Date)


def local_date_filter(stmt: S, filters: SessionFilters) -> S:
    """The `from`/`to` window on a query that joins Program: dates are the sessions' local
    dates (inclusive), date-times are instants (`from` inclusive, `to` exclusive)."""
    if isinstance(filters.start, datetime):
        stmt = stmt.where(col(Session.starts_at) >= filters.start)
    elif filters.start is not None:
        stmt = stmt.where(_local_date(Program.timezone) >= filters.start)
    if isinstance(filters.end, datetime):
        stmt = stmt.where(col(Session.starts_at) < filters.end)
    elif filters.end is not None:
        stmt = stmt.where(_local_date(Program.timezone) <= filters.end)
    return stmt


async def list_sessions(
    db: AsyncSession, principal: Principal, filters: SessionFilters, page: PageRequest
) -> Page[SessionRead]:
    """Sessions the caller may see, by start time. Dates in `from`/`to` are the sessions' own
    local dates (inclusive); date-times are instants (`from` inclusive, `to` exclusive)."""
    stmt = _with_invoice(
        select(
            Session, col(Program.timezone), col(InvoiceLine.invoice_id), col(Invoice.status)
        ).join(Program, col(Program.id) == Session.program_id)
    )
    stmt = scope_to_tenant(
        stmt,
        principal,
        organization_column=Session.organization_id,
        therapist_column=Session.therapist_id,
    )
    stmt = local_date_filter(stmt, filters)
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
        order_by=Session.starts_at,
        id_column=Session.id,
        page=page,
        to_read=lambda row: to_read(row[0], row[1], _invoice_seen_by(principal, row[2], row[3])),
        rows_are_tuples=True,
    )


async def read(db: AsyncSession, principal: Principal, session_id: uuid.UUID) -> SessionRead:
    """One session as the caller may see it, with its invoice where they may see that."""
    session, program = await get_visible(db, principal, session_id)
    row = (
        await db.execute(
            _with_invoice(
                select(col(InvoiceLine.invoice_id), col(Invoice.status)).select_from(Session)
            ).where(col(Session.id) == session.id)
        )
    ).one()
    return to_read(session, program.timezone, _invoice_seen_by(principal, row[0], row[1]))


async def get_visible(
    db: AsyncSession, principal: Principal, session_id: uuid.UUID, *, for_update: bool = False
) -> tuple[Session, Program]:
    stmt = select(Session, Program).join(Program, col(Program.id) == Session.program_id)
    stmt = scope_to_tenant(
        stmt.where(col(Session.id) == session_id),
        principal,
        organization_column=Session.organization_id,
        therapist_column=Session.therapist_id,
    )
    if for_update:
        stmt = stmt.with_for_update(of=Session)
    row = (await db.execute(stmt)).one_or_none()
    if row is None:
        raise NotFound(f"Session {session_id} not found")
    return row[0], row[1]


def _require_scheduled(session: Session, move: str) -> None:
    if session.status != SessionStatus.scheduled:
        raise InvalidState(
            f"A {session.status} session cannot be {move}",
            session_id=str(session.id),
            session_status=session.status,
        )


async def _changed(
    db: AsyncSession,
    principal: Principal,
    session: Session,
    program: Program,
    before: SessionRead,
    action: str,
) -> SessionRead:
    session.updated_at = utcnow()
    session.sequence += 1
    await db.flush()
    after = to_read(session, program.timezone)
    await audit.record(
        db,
        principal,
        action=action,
        entity_type="session",
        entity_id=session.id,
        organization_id=session.organization_id,
        before=before,
        after=after,
    )
    if outbox.is_event(action):
        await outbox.publish(db, action, after)
    return after


async def _require_staffable(
    db: AsyncSession,
    principal: Principal,
    session: Session,
    program: Program,
    therapist: Therapist,
    slot: Slot,
    *,
    override: bool,
) -> None:
    offering = await db.get(Offering, program.offering_id)
    assert offering is not None
    await staffing.require_staffable(
        db,
        principal,
        therapist=therapist,
        offering=offering,
        proposals=[staffing.Proposal(slot, session.id)],
        ignored_session_ids=[session.id],
        override=override,
        audit_entity=("session", session.id, session.organization_id),
    )


async def reschedule(
    db: AsyncSession, principal: Principal, session_id: uuid.UUID, data: RescheduleSession
) -> SessionRead:
    """Move one session; its length is kept and its therapist must be able to take it."""
    session, program = await get_visible(db, principal, session_id, for_update=True)
    require_role(principal, (Role.admin,), "reschedule sessions")
    _require_scheduled(session, "rescheduled")
    if data.starts_at <= utcnow():
        raise ValidationFailed([FieldError("starts_at", "must be in the future")])
    before = to_read(session, program.timezone)
    slot = Slot(data.starts_at, data.starts_at + (session.ends_at - session.starts_at))
    therapist = await db.get(Therapist, session.therapist_id)
    assert therapist is not None
    await _require_staffable(
        db, principal, session, program, therapist, slot, override=data.override
    )
    session.starts_at, session.ends_at = slot.starts_at, slot.ends_at
    session.rescheduled = True
    return await _changed(db, principal, session, program, before, "session.rescheduled")


async def substitute(
    db: AsyncSession, principal: Principal, session_id: uuid.UUID, data: SubstituteSession
) -> SessionRead:
    """Give one scheduled session to another therapist, checked like any assignment."""
    session, program = await get_visible(db, principal, session_id, for_update=True)
    require_role(principal, (Role.admin,), "substitute therapists")
    _require_scheduled(session, "given to another therapist")
    if data.therapist_id == session.therapist_id:
        raise InvalidState("The session already has this therapist")
    therapist = await db.get(Therapist, data.therapist_id)
    if therapist is None:
        raise ValidationFailed([FieldError("therapist_id", "no such therapist", "not_found")])
    before = to_read(session, program.timezone)
    await _require_staffable(
        db,
        principal,
        session,
        program,
        therapist,
        Slot(session.starts_at, session.ends_at),
        override=data.override,
    )
    session.therapist_id = therapist.id
    return await _changed(db, principal, session, program, before, "session.substituted")


async def cancel(
    db: AsyncSession, principal: Principal, session_id: uuid.UUID, data: CancelSession
) -> SessionRead:
    """A cancellation by the organization inside the offering's notice window is late (and
    billable at the offering's fee); the provider's, or an early one, is free."""
    session, program = await get_visible(db, principal, session_id, for_update=True)
    require_role(principal, CANCELLERS, "cancel sessions")
    _require_scheduled(session, "cancelled")
    by = data.cancelled_by or (
        CancelledBy.organization if principal.role == Role.coordinator else CancelledBy.provider
    )
    if principal.role == Role.coordinator and by != CancelledBy.organization:
        raise ValidationFailed(
            [FieldError("cancelled_by", "a coordinator cancels for the organization")]
        )
    offering = await db.get(Offering, program.offering_id)
    assert offering is not None
    before = to_read(session, program.timezone)
    now = utcnow()
    late = now > session.starts_at - timedelta(hours=offering.cancellation_notice_hours)
    session.status = (
        SessionStatus.late_cancelled
        if by == CancelledBy.organization and late
        else SessionStatus.cancelled
    ).value
    session.cancelled_by, session.cancel_reason, session.cancelled_at = by.value, data.reason, now
    return await _changed(db, principal, session, program, before, "session.cancelled")


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
    _require_scheduled(
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
    return await _changed(db, principal, session, program, before, f"session.{status.value}")


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
