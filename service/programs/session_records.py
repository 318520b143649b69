"""Session rows: reading them as the caller may see them (with the invoice they may see), the
`from`/`to` window, and recording a change to one."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import Row, Select, and_, bindparam, false, inspect, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.base import read_model, utcnow
from models.billing import Invoice, InvoiceLine, InvoiceStatus
from models.programs import Program
from models.sessions import Session, SessionRead, SessionStatus
from models.types import Role
from service.core import audit, zones
from service.core.auth import Principal, ScopedStatement
from service.core.clock import local_midnight
from service.core.errors import InvalidState, NotFound

S = TypeVar("S", bound=Select)


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


# A session's read model straight from a row of these columns (its own fields, then its
# program's `timezone`, `invoice_id` and `invoice_status`), with no ORM entity on the way: for
# a page of 50 sessions, loading entities and dumping them again was most of the request.
SESSION_COLUMN_NAMES = frozenset(inspect(Session).columns.keys())
READ_COLUMNS = tuple(
    getattr(Session, name) for name in SessionRead.model_fields if name in SESSION_COLUMN_NAMES
)


def read_from_row(values: dict[str, Any], principal: Principal) -> SessionRead:
    """A session's read model from a row's values by name (`row_values`)."""
    values["invoice_id"] = invoice_seen_by(
        principal, values.pop("invoice_id"), values.pop("invoice_status")
    )
    return read_model(SessionRead, values)


def with_invoice(stmt: S) -> S:
    """Join the session's live invoice line (a session's invoice is its live line's)."""
    return stmt.outerjoin(
        InvoiceLine, and_(col(InvoiceLine.session_id) == Session.id, col(InvoiceLine.live))
    ).outerjoin(Invoice, col(Invoice.id) == InvoiceLine.invoice_id)


def invoice_seen_by(principal: Principal, invoice_id: Any, status: Any) -> uuid.UUID | None:
    """Staff see every invoice; an organization only what it was sent; therapists no billing."""
    if invoice_id is None or principal.role == Role.therapist:
        return None
    if principal.role == Role.coordinator and status == InvoiceStatus.draft.value:
        return None
    return invoice_id if isinstance(invoice_id, uuid.UUID) else uuid.UUID(str(invoice_id))


async def local_date_filter(db: AsyncSession, stmt: S, filters: SessionFilters) -> S:
    """The `from`/`to` window on a query that joins Program: dates are the sessions' local
    dates in their program's zone (inclusive), date-times are instants (`from` inclusive, `to`
    exclusive). Local dates become instants here, by Python's zone rules, one pair per zone in
    use (never the database server's rules: service.core.zones)."""
    if isinstance(filters.start, datetime):
        stmt = stmt.where(col(Session.starts_at) >= filters.start)
    if isinstance(filters.end, datetime):
        stmt = stmt.where(col(Session.starts_at) < filters.end)
    first = filters.start if not isinstance(filters.start, datetime) else None
    last = filters.end if not isinstance(filters.end, datetime) else None
    if first is None and last is None:
        return stmt
    # Every zone's sessions of those dates lie inside this UTC window (an index range).
    if first is not None:
        stmt = stmt.where(col(Session.starts_at) >= zones.utc_window(first, first)[0])
    if last is not None:
        stmt = stmt.where(col(Session.starts_at) < zones.utc_window(last, last)[1])
    in_zone = []
    for zone in await db.scalars(select(col(Program.timezone)).distinct()):
        bounds = [col(Program.timezone) == zone]
        if first is not None:
            bounds.append(col(Session.starts_at) >= local_midnight(first, zone))
        if last is not None:
            bounds.append(col(Session.starts_at) < local_midnight(last + timedelta(days=1), zone))
        in_zone.append(and_(*bounds))
    return stmt.where(or_(*in_zone) if in_zone else false())


SESSION_ID = "session_id"


def visible(stmt: S) -> ScopedStatement[S]:
    """`stmt` (on Session) narrowed to the session `:session_id`, if the caller may see it;
    built once (see `ScopedStatement`)."""
    return ScopedStatement(
        stmt.where(col(Session.id) == bindparam(SESSION_ID)),
        organization_column=Session.organization_id,
        therapist_column=Session.therapist_id,
    )


async def one_visible(
    db: AsyncSession, scoped: ScopedStatement[Any], principal: Principal, session_id: uuid.UUID
) -> Row[Any]:
    """The row of `scoped` for the session, or NotFound when the caller may not see it."""
    stmt, parameters = scoped.for_principal(principal, **{SESSION_ID: session_id})
    row = (await db.execute(stmt, parameters)).one_or_none()
    if row is None:
        raise NotFound(f"Session {session_id} not found")
    return row


_WITH_PROGRAM = select(Session, Program).join(Program, col(Program.id) == Session.program_id)
_SESSION_AND_PROGRAM = {
    False: visible(_WITH_PROGRAM),
    True: visible(_WITH_PROGRAM.with_for_update(of=Session)),
}


async def get_visible(
    db: AsyncSession, principal: Principal, session_id: uuid.UUID, *, for_update: bool = False
) -> tuple[Session, Program]:
    """The session and its program, or NotFound when the caller may not see it (before any
    role check, so a refusal never confirms that another organization's session exists)."""
    row = await one_visible(db, _SESSION_AND_PROGRAM[for_update], principal, session_id)
    session, program = cast("Row[Session, Program]", row)
    return session, program


def require_scheduled(session: Session, move: str) -> None:
    if session.status != SessionStatus.scheduled:
        raise InvalidState(
            f"A {session.status} session cannot be {move}",
            session_id=str(session.id),
            session_status=session.status,
        )


async def record_change(
    db: AsyncSession,
    principal: Principal,
    session: Session,
    program: Program,
    before: SessionRead,
    action: str,
) -> SessionRead:
    """Stamp the change (calendar feeds see a higher SEQUENCE) and record it."""
    session.updated_at = utcnow()
    session.sequence += 1
    await db.flush()
    after = to_read(session, program.timezone)
    await audit.record_change(db, principal, action, session, before=before, after=after)
    return after
