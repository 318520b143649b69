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
from service.core.clock import local_midnight, local_today
from service.core.errors import FieldError, ValidationFailed
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
    """A new schedule from `effective` on. Sessions are occurrences of the contract: those
    planned before `effective` keep their numbers, and the new schedule's sessions from
    `effective` on are the occurrences after them, in order. A plain scheduled session from
    then is replaced by the new plan; a session moved, cancelled or made up by hand (or
    delivered) keeps its identity and stands for its occurrence, which is not planned again.
    A scheduled one beyond a shorter contract (a lower COUNT, an earlier UNTIL) is removed."""
    cut = local_midnight(effective, program.timezone)
    rows = (
        (
            await db.execute(
                select(Session).where(col(Session.program_id) == program.id).with_for_update()
            )
        )
        .scalars()
        .all()
    )
    before = max(
        (s.occurrence for s in rows if s.makes_up is None and s.original_starts_at < cut),
        default=0,
    )
    replaced = {s.id for s in rows if _plain(s) and s.starts_at >= cut and s.occurrence > before}
    kept = [s for s in rows if s.id not in replaced]
    rules.apply_schedule(program, schedule)
    program.series_start, program.series_offset = effective, before
    contract = recurrence.parse_rule(program.rrule).count
    if contract is not None and contract < before:
        raise ValidationFailed(
            [
                FieldError(
                    "schedule.rrule",
                    f"COUNT={contract} is below the {before} sessions before {effective}",
                    "schedule",
                )
            ]
        )
    numbered = await series_to_horizon(db, program, horizon_weeks=horizon_weeks)
    last = _last_occurrence(program, numbered)
    beyond = [s for s in kept if last is not None and s.occurrence > last]
    delivered = [s for s in beyond if s.status in (SessionStatus.completed, SessionStatus.no_show)]
    if delivered:
        raise ValidationFailed(
            [
                FieldError(
                    "schedule.rrule",
                    f"the new series ends at session {last}, before sessions already delivered",
                    "schedule",
                )
            ]
        )
    removed = [s.id for s in beyond if s.status == SessionStatus.scheduled]
    await db.execute(sa.delete(Session).where(col(Session.id).in_([*replaced, *removed])))
    taken = {s.occurrence for s in kept if s.makes_up is None}
    new = [(n, o) for n, o in numbered if n not in taken]
    current = await db.get(Therapist, program.therapist_id)
    assert current is not None  # a confirmed program is staffed (a check constraint)
    await require_staffable(
        db,
        principal,
        program,
        current,
        proposals([o for _, o in new]),
        override=override,
    )
    await materialize.materialize(db, program, new)


def _plain(session: Session) -> bool:
    """A session as the plan made it: scheduled, never moved by hand, not a make-up."""
    return (
        session.status == SessionStatus.scheduled
        and not session.rescheduled
        and session.makes_up is None
    )


def _last_occurrence(program: Program, numbered: plan.Numbered) -> int | None:
    """The contract's last occurrence: COUNT's, or UNTIL's last session; none when open."""
    rule = recurrence.parse_rule(program.rrule)
    if rule.count is not None:
        return rule.count
    if rule.until is not None:
        return numbered[-1][0] if numbered else program.series_offset
    return None


async def contract_end(db: AsyncSession, program: Program, *, horizon_weeks: int) -> int | None:
    """The contract's last occurrence (COUNT's, or the last session before UNTIL); none for an
    open-ended program."""
    if recurrence.parse_rule(program.rrule).open_ended:
        return None
    return _last_occurrence(
        program, await series_to_horizon(db, program, horizon_weeks=horizon_weeks)
    )


async def series_to_horizon(
    db: AsyncSession, program: Program, *, horizon_weeks: int
) -> plan.Numbered:
    """The program's current series, numbered; an open-ended one up to the horizon."""
    until = None
    if recurrence.is_open_ended(program.rrule):
        until = plan.horizon_end(
            max(local_today(program.timezone), program.series_start), horizon_weeks
        )
    return plan.series(
        program, holiday_region=await records.holiday_region(db, program), until=until
    )


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
