"""What therapists already hold, loaded set-based for the staffing rules
(service.scheduling.staffing) and the suggestions: a fixed number of queries whatever the
number of therapists and slots."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.base import sql_values, utcnow
from models.programs import Program
from models.sessions import LIVE_STATUSES
from models.therapists import AvailabilityRow, Therapist, TimeOff
from service.core import zones
from service.scheduling.conflicts import Clash, Slot
from service.scheduling.staffing import (
    WEEK_MARGIN,
    Facts,
    Proposal,
    by_week,
    span,
    windows_value,
)
from service.scheduling.suggestions import LOAD_WEEKS, Standing

LIVE = sql_values(LIVE_STATUSES)

_OVERLAPS = text(
    f"""
    SELECT s.id, s.program_id, s.therapist_id, s.starts_at, s.ends_at, s.original_starts_at,
           c.starts AS proposed_starts_at, c.ends AS proposed_ends_at
    FROM unnest(CAST(:therapists AS uuid[]), CAST(:starts AS timestamptz[]),
                CAST(:ends AS timestamptz[])) AS c(therapist_id, starts, ends)
    JOIN sessions s
      ON s.therapist_id = c.therapist_id
     AND s.status IN ({LIVE})
     AND tstzrange(s.starts_at, s.ends_at) && tstzrange(c.starts, c.ends)
     AND NOT (s.id = ANY(CAST(:ignored AS uuid[])))
    ORDER BY s.starts_at, c.starts
    """
)

# Every therapist against every slot (what assign, confirm and the suggestions ask): one index
# probe per therapist for their live sessions overlapping any of the slots (a multirange), then
# each hit paired with the slots it overlaps. One probe per (therapist, slot) pair instead costs
# 10,400 probes for 200 therapists and a 52-session program (bench/suggestions.py). The pairing
# compares the bounds (what `&&` of two non-empty half-open ranges means) rather than building
# two ranges for each (hit, slot) pair: 50,000 pairs for the same program.
_CLASHES = text(
    f"""
    WITH proposed AS MATERIALIZED (
        SELECT * FROM unnest(CAST(:starts AS timestamptz[]), CAST(:ends AS timestamptz[]))
            WITH ORDINALITY AS c(starts, ends, slot)
    ),
    held AS MATERIALIZED (
        SELECT s.id, s.program_id, s.therapist_id, s.starts_at, s.ends_at, s.original_starts_at
        FROM unnest(CAST(:therapists AS uuid[])) AS t(id)
        JOIN sessions s
          ON s.therapist_id = t.id
         AND s.status IN ({LIVE})
         AND tstzrange(s.starts_at, s.ends_at)
             && (SELECT range_agg(tstzrange(starts, ends)) FROM proposed)
         AND NOT (s.id = ANY(CAST(:ignored AS uuid[])))
    )
    SELECT h.*, c.slot
    FROM held h
    JOIN proposed c ON h.starts_at < c.ends AND c.starts < h.ends_at AND c.starts < c.ends
    ORDER BY h.starts_at, c.starts
    """
)

# Only the weeks that could pass a therapist's maximum with the proposals added (at most
# :most_proposed minutes in any one week) come back: the others cannot raise a problem, and
# 200 therapists over a year are 10,000 weeks to send and read (bench/suggestions.py).
# Each therapist's weeks are summed on their own, from the index of their live sessions alone
# (ix_sessions_therapist_live_starts), and by session length first: a week's minutes are
# the sum over its lengths of count x minutes, the same exact numeric sum as one term per
# session, with the numeric work done once per length instead of once per session. Summing
# all therapists' sessions at once, by (therapist, week) in one hash table, took twice as long.
_WEEKLY_MINUTES = text(
    f"""
    SELECT t.id AS therapist_id, w.week, w.minutes
    FROM therapists t
    CROSS JOIN LATERAL (
        SELECT week, sum(sessions * (extract(epoch FROM length) / 60))::int AS minutes
        FROM (
            SELECT date_trunc('week', {zones.local_time("s.starts_at")})::date AS week,
                   s.ends_at - s.starts_at AS length,
                   count(*) AS sessions
            FROM sessions s
            {zones.offsets_join("t.timezone", "s.starts_at")}
            WHERE s.therapist_id = t.id
              AND s.status IN ({LIVE})
              AND NOT (s.id = ANY(CAST(:ignored AS uuid[])))
              AND s.starts_at >= :low AND s.starts_at < :high
            GROUP BY 1, 2
        ) by_length
        GROUP BY week
        HAVING sum(sessions * (extract(epoch FROM length) / 60))::int
               > t.max_weekly_minutes - :most_proposed
    ) w
    WHERE t.id = ANY(CAST(:therapists AS uuid[]))
    """
)

# Per therapist, from the index of their live sessions alone: the whole table's sessions of
# every therapist, joined and filtered, cost three times as much (bench/suggestions.py).
_STANDING = text(
    f"""
    SELECT t.id AS therapist_id,
           (SELECT coalesce(sum(extract(epoch FROM s.ends_at - s.starts_at) / 60), 0)::int
            FROM sessions s
            WHERE s.therapist_id = t.id AND s.status IN ({LIVE})
              AND s.starts_at >= :now AND s.starts_at < :until)
               AS upcoming_minutes,
           (SELECT count(*)
            FROM sessions s
            WHERE s.therapist_id = t.id AND s.status IN ({LIVE})
              AND s.organization_id = :organization_id AND s.program_id <> :program_id)
               AS sessions_with_organization
    FROM therapists t
    WHERE t.id = ANY(CAST(:therapists AS uuid[]))
    """
)


async def overlapping_bookings(
    db: AsyncSession,
    *,
    bookings: Sequence[tuple[uuid.UUID, Slot]],
    ignored_session_ids: Collection[uuid.UUID] = (),
) -> list[Clash]:
    """Every (existing live session, proposed slot) pair that overlaps, for proposed slots of
    one or several therapists, in one query."""
    if not bookings:
        return []
    rows = await db.execute(
        _OVERLAPS,
        {
            "therapists": [therapist for therapist, _ in bookings],
            "starts": [slot.starts_at for _, slot in bookings],
            "ends": [slot.ends_at for _, slot in bookings],
            "ignored": list(ignored_session_ids),
        },
    )
    return _clashes(rows, lambda row: Slot(row.proposed_starts_at, row.proposed_ends_at))


async def clashes(
    db: AsyncSession,
    *,
    therapist_ids: Sequence[uuid.UUID],
    slots: Sequence[Slot],
    ignored_session_ids: Collection[uuid.UUID] = (),
) -> list[Clash]:
    """Every (existing live session, proposed slot) pair that overlaps, for each of the
    therapists taking every one of the slots, in one query."""
    if not therapist_ids or not slots:
        return []
    rows = await db.execute(
        _CLASHES,
        {
            "therapists": list(therapist_ids),
            "starts": [slot.starts_at for slot in slots],
            "ends": [slot.ends_at for slot in slots],
            "ignored": list(ignored_session_ids),
        },
    )
    # Each hit names the slot it overlaps by its position (1-based), not by its bounds: the
    # caller's own slot, not a copy of it rebuilt from two more timestamps per row.
    return _clashes(rows, lambda row: slots[row.slot - 1])


def _clashes(rows: Any, proposed: Callable[[Any], Slot]) -> list[Clash]:
    return [
        Clash(
            session_id=row.id,
            program_id=row.program_id,
            therapist_id=row.therapist_id,
            starts_at=row.starts_at,
            ends_at=row.ends_at,
            original_starts_at=row.original_starts_at,
            proposed=proposed(row),
        )
        for row in rows
    ]


async def load(
    db: AsyncSession,
    therapists: Sequence[Therapist],
    proposals: Sequence[Proposal],
    *,
    ignored_session_ids: Collection[uuid.UUID] = (),
) -> Facts:
    """Clashes, weekly windows, time off and booked weekly minutes (by local weeks in each
    therapist's zone) around the proposals."""
    if not therapists or not proposals:
        return Facts()
    ids = [t.id for t in therapists]
    low, high = span(proposals)
    facts = Facts(
        clashes=await clashes(
            db,
            therapist_ids=ids,
            slots=[p.slot for p in proposals],
            ignored_session_ids=ignored_session_ids,
        )
    )
    windows: dict[uuid.UUID, list[tuple[str, int, int]]] = defaultdict(list)
    for therapist_id, weekday, start_minute, end_minute in await db.execute(
        select(
            col(AvailabilityRow.therapist_id),
            col(AvailabilityRow.weekday),
            col(AvailabilityRow.start_minute),
            col(AvailabilityRow.end_minute),
        ).where(col(AvailabilityRow.therapist_id).in_(ids))
    ):
        windows[therapist_id].append((weekday, start_minute, end_minute))
    facts.windows = {therapist_id: windows_value(found) for therapist_id, found in windows.items()}
    for off in (
        await db.execute(
            select(TimeOff).where(
                col(TimeOff.therapist_id).in_(ids),
                col(TimeOff.starts_at) < high,
                col(TimeOff.ends_at) > low,
            )
        )
    ).scalars():
        facts.time_off.setdefault(off.therapist_id, []).append(off)
    week: Any
    for week in await db.execute(
        _WEEKLY_MINUTES,
        {
            "therapists": ids,
            "ignored": list(ignored_session_ids),
            "low": low - WEEK_MARGIN,
            "high": high + WEEK_MARGIN,
            "most_proposed": most_in_a_week(proposals, {t.timezone for t in therapists}),
            **zones.offsets(
                {t.timezone for t in therapists}, low - WEEK_MARGIN, high + WEEK_MARGIN
            ).params(),
        },
    ):
        key = (week.therapist_id, week.week)
        facts.booked_minutes[key] = facts.booked_minutes.get(key, 0) + week.minutes
    return facts


def most_in_a_week(proposals: Sequence[Proposal], timezones: Collection[str]) -> int:
    """The most proposed minutes in one local week, in any of the zones."""
    return max(
        sum(p.slot.minutes for p in in_week)
        for zone in timezones
        for in_week in by_week(proposals, ZoneInfo(zone)).values()
    )


async def standings(
    db: AsyncSession, therapist_ids: Sequence[uuid.UUID], program: Program
) -> dict[uuid.UUID, Standing]:
    """Each therapist's load over the next weeks and continuity with the organization."""
    now: datetime = utcnow()
    rows = await db.execute(
        _STANDING,
        {
            "therapists": list(therapist_ids),
            "now": now,
            "until": now + timedelta(weeks=LOAD_WEEKS),
            "organization_id": program.organization_id,
            "program_id": program.id,
        },
    )
    return {
        row.therapist_id: Standing(int(row.upcoming_minutes), int(row.sessions_with_organization))
        for row in rows
    }
