"""Staffing programs: assigning a therapist, confirming (which writes the sessions) and ranking
therapists for a program. Each use case is one function here; the checks and writes are below
(series, staffing_check, materialize)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.base import utcnow
from models.programs import (
    AssignTherapist,
    ConfirmProgram,
    Program,
    ProgramRead,
    ProgramStatus,
    SuggestionList,
)
from models.sessions import Session, SessionStatus
from models.therapists import Therapist
from service.core.auth import Principal, require_role
from service.core.errors import FieldError, InvalidState, ValidationFailed
from service.core.settings import Settings
from service.programs import materialize, records, rules, series, staffing_facts
from service.programs.staffing_check import active_therapist, require_staffable
from service.scheduling import staffing, suggestions
from service.scheduling.conflicts import Slot


async def assign(
    db: AsyncSession,
    principal: Principal,
    program: Program,
    data: AssignTherapist,
    *,
    settings: Settings,
) -> ProgramRead:
    """Staff a requested program, or hand a confirmed one's future sessions to someone else."""
    require_role(principal, records.STAFF, "assign therapists")
    therapist = await active_therapist(db, data.therapist_id)
    before = records.to_read(program)
    if program.status == ProgramStatus.requested:
        await series.staff_plan(
            db,
            principal,
            program,
            therapist,
            override=data.override,
            horizon_weeks=settings.horizon_weeks,
        )
    elif program.status == ProgramStatus.confirmed:
        effective = rules.effective_date(program, data.effective_date, required=False)
        await series.hand_over(db, principal, program, therapist, effective, override=data.override)
    else:
        raise InvalidState(f"A {program.status} program cannot be staffed")
    return await records.record_change(db, principal, program, before, "program.assigned")


async def confirm(
    db: AsyncSession,
    principal: Principal,
    program: Program,
    data: ConfirmProgram,
    *,
    settings: Settings,
) -> ProgramRead:
    """Confirm a staffed program: its sessions (to the horizon, for open-ended ones) are
    written in one statement, or nothing is written and every conflict is listed."""
    require_role(principal, records.STAFF, "confirm programs")
    if program.status != ProgramStatus.requested:
        raise InvalidState(f"A {program.status} program cannot be confirmed")
    if program.therapist_id is None:
        raise InvalidState("Assign a therapist before confirming the program")
    occurrences = await series.planned(db, program, horizon_weeks=settings.horizon_weeks)
    if not occurrences:
        raise ValidationFailed(
            [FieldError("schedule", "the schedule produces no sessions", "empty_schedule")]
        )
    therapist = await db.get(Therapist, program.therapist_id)
    assert therapist is not None
    await require_staffable(
        db, principal, program, therapist, series.proposals(occurrences), override=data.override
    )
    before = records.to_read(program)
    # The contract's numbering starts here: its first session is occurrence 1.
    program.series_start, program.series_offset = program.start_date, 0
    await materialize.materialize(db, program, list(enumerate(occurrences, start=1)))
    program.status = ProgramStatus.confirmed.value
    return await records.record_change(db, principal, program, before, "program.confirmed")


async def suggest_therapists(
    db: AsyncSession, principal: Principal, program: Program, *, settings: Settings
) -> SuggestionList:
    """Active therapists ranked for the whole program: eligible ones first, by score. A
    requested program is judged on its plan, a confirmed one on its sessions still to come."""
    require_role(principal, records.STAFF, "see staffing suggestions")
    if program.status not in (ProgramStatus.requested, ProgramStatus.confirmed):
        raise InvalidState(f"A {program.status} program is not being staffed")
    proposals, ignored = await _still_to_staff(db, program, settings=settings)
    therapists = list(
        (await db.execute(select(Therapist).where(col(Therapist.active).is_(True)))).scalars()
    )
    ids = [t.id for t in therapists]
    facts = await staffing_facts.load(db, therapists, proposals, ignored_session_ids=ignored)
    problems = staffing.evaluate(
        therapists, await records.offering_of(db, program), proposals, facts
    )
    standings = await staffing_facts.standings(db, ids, program)
    return SuggestionList(
        data=suggestions.ranked(
            suggestions.suggest(
                t, program, problems[t.id], standings.get(t.id, suggestions.Standing())
            )
            for t in therapists
        )
    )


async def _still_to_staff(
    db: AsyncSession, program: Program, *, settings: Settings
) -> tuple[list[staffing.Proposal], list]:
    if program.status == ProgramStatus.requested:
        occurrences = await series.planned(db, program, horizon_weeks=settings.horizon_weeks)
        return series.proposals(occurrences), []
    future = (
        await db.execute(
            select(Session).where(
                col(Session.program_id) == program.id,
                col(Session.status) == SessionStatus.scheduled.value,
                col(Session.starts_at) >= utcnow(),
            )
        )
    ).scalars()
    proposals = [staffing.Proposal(Slot(s.starts_at, s.ends_at), s.id) for s in future]
    return proposals, [p.session_id for p in proposals]
