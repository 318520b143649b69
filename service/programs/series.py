"""A program's series: its planned occurrences, and the changes to its scheduled sessions from
an effective date that staffing and changes share (hand over, reprice, replan, cancel). Each
runs the staffing check before it writes; none calls back up into an orchestrator."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import case, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.base import utcnow
from models.programs import Program, Schedule
from models.sessions import CancelledBy, Session, SessionStatus
from models.therapists import Therapist
from service.core.auth import Principal
from service.programs import materialize, records, rules
from service.programs.staffing_check import require_staffable
from service.scheduling import plan, recurrence
from service.scheduling.conflicts import Slot
from service.scheduling.staffing import Proposal


async def planned(
    db: AsyncSession, program: Program, *, horizon_weeks: int, after: date | None = None
) -> list[recurrence.Occurrence]:
    return plan.planned(
        program,
        holiday_region=await records.holiday_region(db, program),
        horizon_weeks=horizon_weeks,
        after=after,
    )


def proposals(occurrences: list[recurrence.Occurrence]) -> list[Proposal]:
    return [Proposal(slot) for slot in plan.slots(occurrences)]


async def staff_plan(
    db: AsyncSession,
    principal: Principal,
    program: Program,
    therapist: Therapist,
    *,
    override: bool,
    horizon_weeks: int,
) -> None:
    """Give a program that has no sessions yet to `therapist`, who must be able to take its
    whole plan."""
    occurrences = await planned(db, program, horizon_weeks=horizon_weeks)
    await require_staffable(
        db, principal, program, therapist, proposals(occurrences), override=override
    )
    program.therapist_id = therapist.id


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
                .where(*records.future_sessions(program, effective))
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
        [Proposal(Slot(s.starts_at, s.ends_at), s.id) for s in future],
        override=override,
        ignored_session_ids=[s.id for s in future],
    )
    await db.execute(
        sa.update(Session)
        .where(col(Session.id).in_([s.id for s in future]))
        .values(therapist_id=therapist.id, sequence=Session.sequence + 1, updated_at=utcnow())
    )
    program.therapist_id = therapist.id


async def reprice(db: AsyncSession, program: Program, rate_cents: int, effective: date) -> None:
    """A new rate for the program and its scheduled sessions from `effective` on."""
    program.rate_cents = rate_cents
    await db.execute(
        sa.update(Session)
        .where(*records.future_sessions(program, effective))
        .values(rate_cents=rate_cents)
    )


async def replan(
    db: AsyncSession,
    principal: Principal,
    program: Program,
    schedule: Schedule,
    effective: date,
    *,
    override: bool,
    horizon_weeks: int,
) -> None:
    """A new schedule from `effective` on: scheduled sessions from then that were not moved by
    hand are replaced by the new plan (completed, cancelled and rescheduled ones are kept)."""
    await db.execute(
        sa.delete(Session).where(
            *records.future_sessions(program, effective), col(Session.rescheduled).is_(False)
        )
    )
    rules.apply_schedule(program, schedule)
    occurrences = await planned(db, program, horizon_weeks=horizon_weeks, after=effective)
    current = await db.get(Therapist, program.therapist_id)
    assert current is not None  # a confirmed program is staffed (a check constraint)
    await require_staffable(
        db, principal, program, current, proposals(occurrences), override=override
    )
    await materialize.materialize(db, program, occurrences)


async def cancel_from(
    db: AsyncSession,
    program: Program,
    effective: date,
    *,
    by: CancelledBy,
    notice_hours: int,
    reason: str | None,
    now: datetime,
) -> None:
    """Cancel the scheduled sessions from `effective` on; when the organization cancels, those
    inside the offering's notice window are late (and billable)."""
    late_before = now + timedelta(hours=notice_hours)
    status = (
        case(
            (col(Session.starts_at) < late_before, SessionStatus.late_cancelled.value),
            else_=SessionStatus.cancelled.value,
        )
        if by == CancelledBy.organization
        else SessionStatus.cancelled.value
    )
    await db.execute(
        sa.update(Session)
        .where(*records.future_sessions(program, effective))
        .values(
            status=status,
            cancelled_by=by.value,
            cancel_reason=reason,
            cancelled_at=now,
            sequence=Session.sequence + 1,
            updated_at=now,
        )
    )
