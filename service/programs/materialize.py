"""Turning a program's planned occurrences (service.scheduling.plan) into session rows, written
set-based (one INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING on the occurrence
number), so materializing twice adds nothing, an occurrence moved, cancelled or made up by hand
is never planned again, and a thousand sessions cost one round trip, not a thousand.

Why unnest and not a multi-row VALUES: the rows travel as one array per column (14 parameters
whatever the number of rows), so neither SQLAlchemy nor PostgreSQL compiles a statement with
thousands of placeholders; 100,000 sessions cost about what a COPY of them does
(bench/bench_materialize.py)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import CursorResult, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.base import utcnow
from models.organizations import Organization
from models.programs import Program, ProgramStatus
from models.sessions import Session
from service.programs.staffing_facts import overlapping_bookings
from service.scheduling import recurrence
from service.scheduling.conflicts import Slot
from service.scheduling.plan import Numbered, horizon_end, series

INSERT_BATCH = 10_000  # rows per statement: bounds one statement's size, not its parameters

# What varies between planned sessions travels as one array per column; a new session is
# scheduled, at its first planned time, and the same for the rest.
_VARYING = (
    "program_id",
    "organization_id",
    "therapist_id",
    "starts_at",
    "ends_at",
    "occurrence",
    "rate_cents",
)
_INSERT = text(
    """
    INSERT INTO sessions (id, program_id, organization_id, therapist_id, starts_at, ends_at,
                          occurrence, rate_cents, original_starts_at, status, rescheduled,
                          sequence, created_at, updated_at)
    SELECT gen_random_uuid(), p.*, p.starts_at, 'scheduled', false, 0, :now, :now
    FROM unnest(CAST(:program_id AS uuid[]), CAST(:organization_id AS uuid[]),
                CAST(:therapist_id AS uuid[]), CAST(:starts_at AS timestamptz[]),
                CAST(:ends_at AS timestamptz[]), CAST(:occurrence AS int[]),
                CAST(:rate_cents AS bigint[]))
         AS p(program_id, organization_id, therapist_id, starts_at, ends_at, occurrence,
              rate_cents)
    ON CONFLICT (program_id, occurrence) WHERE makes_up IS NULL DO NOTHING
    """
)


def _row(program: Program, number: int, occurrence: recurrence.Occurrence) -> dict[str, Any]:
    assert program.therapist_id is not None
    return {
        "program_id": program.id,
        "organization_id": program.organization_id,
        "therapist_id": program.therapist_id,
        "starts_at": occurrence.starts_at,
        "ends_at": occurrence.ends_at,
        "occurrence": number,
        "rate_cents": program.rate_cents,
    }


async def insert_sessions(db: AsyncSession, rows: Sequence[dict[str, Any]]) -> int:
    """Insert planned sessions (scheduled, as first planned) in batches; an occurrence already
    there (whatever happened to it since) is left alone. Returns how many were added."""
    added = 0
    now = utcnow()
    for start in range(0, len(rows), INSERT_BATCH):
        batch = rows[start : start + INSERT_BATCH]
        result = await db.execute(
            _INSERT, {"now": now, **{c: [row[c] for row in batch] for c in _VARYING}}
        )
        assert isinstance(result, CursorResult)
        added += result.rowcount
    return added


async def materialize(db: AsyncSession, program: Program, numbered: Numbered) -> int:
    return await insert_sessions(db, [_row(program, n, o) for n, o in numbered])


async def extend_horizon(db: AsyncSession, *, today: date, weeks: int) -> int:
    """Fill every confirmed open-ended program up to today + `weeks`. Idempotent: calling it
    twice adds nothing. A planned session that would overlap another booking of the therapist
    is left out (the exclusion constraint would refuse it anyway) rather than failing them all.
    Returns how many sessions were added."""
    programs = (
        await db.execute(
            select(Program, col(Organization.holiday_region))
            .join(Organization, col(Organization.id) == Program.organization_id)
            .where(col(Program.status) == ProgramStatus.confirmed.value)
        )
    ).all()
    until = horizon_end(today, weeks)
    open_ended = [(p, region) for p, region in programs if recurrence.is_open_ended(p.rrule)]
    # Occurrences already there, whatever happened to them (moved, cancelled, made up).
    existing = {
        (program_id, number)
        for program_id, number in (
            await db.execute(
                select(col(Session.program_id), col(Session.occurrence)).where(
                    col(Session.program_id).in_([p.id for p, _ in open_ended]),
                    col(Session.makes_up).is_(None),
                )
            )
        ).all()
    }
    planned = _without_internal_overlaps(
        [
            (program, number, occurrence)
            for program, region in open_ended
            for number, occurrence in series(program, holiday_region=region, until=until)
            if occurrence.local_date >= today and (program.id, number) not in existing
        ]
    )
    keyed = {(p.therapist_id, o.starts_at): (p, n, o) for p, n, o in planned}
    clashes = await overlapping_bookings(
        db,
        bookings=[
            (p.therapist_id, Slot(o.starts_at, o.ends_at))
            for p, _, o in planned
            if p.therapist_id is not None
        ],
    )
    for clash in clashes:
        keyed.pop((clash.therapist_id, clash.proposed.starts_at), None)
    return await insert_sessions(db, [_row(p, n, o) for p, n, o in keyed.values()])


Planned = tuple[Program, int, recurrence.Occurrence]


def _without_internal_overlaps(planned: list[Planned]) -> list[Planned]:
    """Two programs of one therapist may collide beyond the horizon checked when they were
    confirmed; keep the earlier-confirmed program's session and leave the other out."""
    kept: list[Planned] = []
    last_end: dict[uuid.UUID | None, datetime] = {}
    for program, number, occurrence in sorted(
        planned, key=lambda po: (str(po[0].therapist_id), po[2].starts_at, po[0].created_at)
    ):
        previous_end = last_end.get(program.therapist_id)
        if previous_end is not None and occurrence.starts_at < previous_end:
            continue
        kept.append((program, number, occurrence))
        last_end[program.therapist_id] = occurrence.ends_at
    return kept
