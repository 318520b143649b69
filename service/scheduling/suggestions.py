"""Ranking therapists for a whole program: hard filters first (the same checks as any
staffing change), then a score. Set-based: a fixed handful of queries for all candidates and
all sessions, whatever their number."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.base import utcnow
from models.offerings import Offering
from models.programs import Program, ProgramStatus, TherapistSuggestion
from models.sessions import Session, SessionStatus
from models.therapists import Therapist
from service.scheduling import staffing
from service.scheduling.conflicts import Slot

SPECIALTY_POINTS = 50  # all focus areas covered
BALANCE_POINTS = 30  # no load at all over the next four weeks
CONTINUITY_POINTS = 20  # has worked with the organization before
LOAD_WEEKS = 4

_LOAD_AND_CONTINUITY = text(
    """
    SELECT t.id AS therapist_id,
           coalesce(sum(extract(epoch FROM s.ends_at - s.starts_at) / 60)
                    FILTER (WHERE s.starts_at >= :now AND s.starts_at < :until
                            AND s.status IN ('scheduled', 'completed', 'no_show')), 0)::int
               AS upcoming_minutes,
           count(s.id) FILTER (WHERE s.organization_id = :organization_id
                               AND s.program_id <> :program_id
                               AND s.status IN ('completed', 'scheduled', 'no_show'))
               AS sessions_with_organization
    FROM therapists t LEFT JOIN sessions s ON s.therapist_id = t.id
    WHERE t.id = ANY(CAST(:therapists AS uuid[]))
    GROUP BY t.id
    """
)


async def _proposals(
    db: AsyncSession, program: Program, planned: list[Any]
) -> tuple[list[staffing.Proposal], list[uuid.UUID]]:
    if program.status != ProgramStatus.confirmed:
        return [staffing.Proposal(Slot(o.starts_at, o.ends_at)) for o in planned], []
    future = (
        (
            await db.execute(
                select(Session).where(
                    col(Session.program_id) == program.id,
                    col(Session.status) == SessionStatus.scheduled.value,
                    col(Session.starts_at) >= utcnow(),
                )
            )
        )
        .scalars()
        .all()
    )
    return (
        [staffing.Proposal(Slot(s.starts_at, s.ends_at), s.id) for s in future],
        [s.id for s in future],
    )


async def rank(
    db: AsyncSession, program: Program, offering: Offering, planned: list[Any]
) -> list[TherapistSuggestion]:
    """`planned` are the program's occurrences (used while it is still requested)."""
    proposals, ignored = await _proposals(db, program, planned)
    therapists = list(
        (await db.execute(select(Therapist).where(col(Therapist.active).is_(True)))).scalars()
    )
    problems = await staffing.evaluate(
        db,
        therapists=therapists,
        offering=offering,
        proposals=proposals,
        ignored_session_ids=ignored,
    )
    now = utcnow()
    facts = {
        row.therapist_id: row
        for row in await db.execute(
            _LOAD_AND_CONTINUITY,
            {
                "therapists": [t.id for t in therapists],
                "now": now,
                "until": now + timedelta(weeks=LOAD_WEEKS),
                "organization_id": program.organization_id,
                "program_id": program.id,
            },
        )
    }
    suggestions = [
        _suggest(therapist, program, problems[therapist.id], facts.get(therapist.id))
        for therapist in therapists
    ]
    return sorted(suggestions, key=lambda s: (not s.eligible, -s.score, s.name))


def _suggest(
    therapist: Therapist, program: Program, problems: list[staffing.Problem], facts: Any
) -> TherapistSuggestion:
    reasons: list[str] = []
    focus = set(program.focus_areas)
    matched = sorted(focus & set(therapist.specialties))
    specialty = SPECIALTY_POINTS * len(matched) / len(focus) if focus else 0.0
    if matched:
        reasons.append(f"specialties match the program's focus: {', '.join(matched)}")
    elif focus:
        reasons.append("no specialty matches the program's focus areas")
    capacity = max(therapist.max_weekly_minutes * LOAD_WEEKS, 1)
    upcoming = int(facts.upcoming_minutes) if facts else 0
    load = min(upcoming / capacity, 1.0)
    reasons.append(f"booked {round(load * 100)}% of their maximum over the next {LOAD_WEEKS} weeks")
    together = int(facts.sessions_with_organization) if facts else 0
    if together:
        reasons.append(f"continuity: {together} session(s) with this organization")
    score = specialty + BALANCE_POINTS * (1 - load) + (CONTINUITY_POINTS if together else 0)
    if problems:
        counts = Counter(p.reason for p in problems)
        reasons = [
            *(
                f"{reason}: {n} session(s)"
                if reason not in {"missing_credentials", "inactive"}
                else next(p.detail for p in problems if p.reason == reason)
                for reason, n in sorted(counts.items())
            ),
            *reasons,
        ]
    return TherapistSuggestion(
        therapist_id=therapist.id,
        name=therapist.name,
        eligible=not problems,
        score=round(score, 1),
        reasons=reasons,
    )
