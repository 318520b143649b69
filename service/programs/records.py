"""Program rows: reading them as the caller may see them, the summary, and recording a change
to one. The bottom of the programs package: nothing here calls up into booking, changes or
staffing."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.base import Page, utcnow
from models.billing import InvoiceLine
from models.offerings import Offering
from models.organizations import Organization
from models.programs import Program, ProgramRead, ProgramStatus, ProgramSummary
from models.sessions import Session, SessionStatus
from models.therapists import Therapist
from models.types import Role
from service.core import audit, crud
from service.core.auth import Principal, ScopedStatement, require_role, scope_to_organizations
from service.core.clock import local_midnight
from service.core.pagination import PageRequest, paginate

READERS = (Role.admin, Role.finance, Role.coordinator)
BOOKERS = (Role.admin, Role.coordinator)
STAFF = (Role.admin,)


def to_read(program: Program) -> ProgramRead:
    data = program.model_dump()
    data["schedule"] = program.schedule().model_dump() | {
        "duration_minutes": program.duration_minutes
    }
    return ProgramRead.model_validate(data)


# Built once per kind of caller (see ScopedStatement); a request brings the program's id.
_BY_ID = select(Program).where(col(Program.id) == bindparam("program_id"))
_PROGRAM_BY_ID = {
    locked: ScopedStatement(
        _BY_ID.with_for_update() if locked else _BY_ID,
        organization_column=Program.organization_id,
    )
    for locked in (False, True)
}


async def get_visible(
    db: AsyncSession, principal: Principal, program_id: uuid.UUID, *, for_update: bool = False
) -> Program:
    """Programs carry money (rates), so therapists read theirs through /v1/me/programs."""
    require_role(principal, READERS, "read programs")
    stmt, parameters = _PROGRAM_BY_ID[for_update].for_principal(principal, program_id=program_id)
    program: Program = await crud.one_or_404(
        db, stmt, f"Program {program_id} not found", parameters
    )
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
    return await paginate(db, stmt, page, to_read)


async def therapist_names(
    db: AsyncSession, principal: Principal, program_ids: list[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """The name of the therapist of each of these programs the caller may read (a
    coordinator learns who is coming, though the therapist's record is the provider's)."""
    require_role(principal, READERS, "read programs")
    stmt = scope_to_organizations(
        select(col(Program.id), col(Therapist.name))
        .join(Therapist, col(Therapist.id) == Program.therapist_id)
        .where(col(Program.id).in_(program_ids)),
        principal,
        Program.organization_id,
    )
    return {row[0]: row[1] for row in (await db.execute(stmt)).all()}


async def offering_of(db: AsyncSession, program: Program) -> Offering:
    offering = await db.get(Offering, program.offering_id)
    assert offering is not None  # a foreign key with ON DELETE RESTRICT
    return offering


async def holiday_region(db: AsyncSession, program: Program) -> str | None:
    org = await db.get(Organization, program.organization_id)
    return org.holiday_region if org else None


def future_sessions(program: Program, effective: date) -> tuple[ColumnElement[bool], ...]:
    """Scheduled sessions of the program from `effective` (a local date) on."""
    return (
        col(Session.program_id) == program.id,
        col(Session.status) == SessionStatus.scheduled.value,
        col(Session.starts_at) >= local_midnight(effective, program.timezone),
    )


async def record_change(
    db: AsyncSession, principal: Principal, program: Program, before: ProgramRead, action: str
) -> ProgramRead:
    program.updated_at = utcnow()
    await db.flush()
    after = to_read(program)
    await audit.record_change(db, principal, action, program, before=before, after=after)
    return after


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
