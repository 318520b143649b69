"""Staffing programs: assigning a therapist, handing a confirmed program over from a date,
confirming (which materializes the sessions) and ranking therapists for a program. Every
staffing change goes through service.scheduling.staffing before anything is written."""

from __future__ import annotations

import uuid
from datetime import date

import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.base import utcnow
from models.offerings import Offering
from models.programs import (
    AssignTherapist,
    ConfirmProgram,
    Program,
    ProgramRead,
    ProgramStatus,
    SuggestionList,
)
from models.sessions import Session
from models.therapists import Therapist
from service.core.auth import Principal, require_role
from service.core.errors import FieldError, InvalidState, ValidationFailed
from service.programs import records as programs
from service.scheduling import materialize, recurrence, staffing, suggestions
from service.scheduling.conflicts import Slot


async def active_therapist(db: AsyncSession, therapist_id: uuid.UUID) -> Therapist:
    therapist = await db.get(Therapist, therapist_id)
    if therapist is None or not therapist.active:
        raise ValidationFailed(
            [FieldError("therapist_id", "no such active therapist", "not_found")]
        )
    return therapist


async def require_staffable(
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


def proposals(planned: list[recurrence.Occurrence]) -> list[staffing.Proposal]:
    return [staffing.Proposal(Slot(o.starts_at, o.ends_at)) for o in planned]


async def hand_over(
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
                select(Session)
                .where(*programs.future_sessions(program, effective))
                .with_for_update()
            )
        )
        .scalars()
        .all()
    )
    await require_staffable(
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
    require_role(principal, programs.STAFF, "assign therapists")
    therapist = await active_therapist(db, data.therapist_id)
    before = programs.to_read(program)
    if program.status == ProgramStatus.requested:
        planned = await programs.planned(db, program)
        await require_staffable(
            db, principal, program, therapist, proposals(planned), override=data.override
        )
        program.therapist_id = therapist.id
    elif program.status == ProgramStatus.confirmed:
        effective = programs.effective_date(program, data.effective_date, required=False)
        await hand_over(db, principal, program, therapist, effective, override=data.override)
    else:
        raise InvalidState(f"A {program.status} program cannot be staffed")
    return await programs.record_change(db, principal, program, before, "program.assigned")


async def confirm(
    db: AsyncSession, principal: Principal, program: Program, data: ConfirmProgram
) -> ProgramRead:
    """Confirm a staffed program: its sessions (to the horizon, for open-ended ones) are
    written in one statement, or nothing is written and every conflict is listed."""
    require_role(principal, programs.STAFF, "confirm programs")
    if program.status != ProgramStatus.requested:
        raise InvalidState(f"A {program.status} program cannot be confirmed")
    if program.therapist_id is None:
        raise InvalidState("Assign a therapist before confirming the program")
    planned = await programs.planned(db, program)
    if not planned:
        raise ValidationFailed(
            [FieldError("schedule", "the schedule produces no sessions", "empty_schedule")]
        )
    therapist = await db.get(Therapist, program.therapist_id)
    assert therapist is not None
    await require_staffable(
        db, principal, program, therapist, proposals(planned), override=data.override
    )
    before = programs.to_read(program)
    await materialize.materialize(db, program, planned)
    program.status = ProgramStatus.confirmed.value
    return await programs.record_change(db, principal, program, before, "program.confirmed")


async def suggest_therapists(
    db: AsyncSession, principal: Principal, program: Program
) -> SuggestionList:
    """Active therapists ranked for the whole program: eligible ones first, by score."""
    require_role(principal, programs.STAFF, "see staffing suggestions")
    if program.status not in (ProgramStatus.requested, ProgramStatus.confirmed):
        raise InvalidState(f"A {program.status} program is not being staffed")
    offering = await db.get(Offering, program.offering_id)
    assert offering is not None
    planned = (
        await programs.planned(db, program) if program.status == ProgramStatus.requested else []
    )
    return SuggestionList(data=await suggestions.rank(db, program, offering, planned))
