"""Finding every session a therapist already holds in a set of proposed time slots, in one
query. This gives the friendly 409 that lists each clash; the exclusion constraint on sessions
remains the guarantee when two requests race."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_OVERLAPS = text(
    """
    SELECT s.id, s.program_id, s.therapist_id, s.starts_at, s.ends_at, s.original_starts_at,
           c.starts AS proposed_starts_at, c.ends AS proposed_ends_at
    FROM unnest(CAST(:therapists AS uuid[]), CAST(:starts AS timestamptz[]),
                CAST(:ends AS timestamptz[])) AS c(therapist_id, starts, ends)
    JOIN sessions s
      ON s.therapist_id = c.therapist_id
     AND s.status IN ('scheduled', 'completed', 'no_show')
     AND tstzrange(s.starts_at, s.ends_at) && tstzrange(c.starts, c.ends)
     AND NOT (s.id = ANY(CAST(:ignored AS uuid[])))
    ORDER BY s.starts_at, c.starts
    """
)


@dataclass(frozen=True)
class Slot:
    starts_at: datetime
    ends_at: datetime


@dataclass(frozen=True)
class Clash:
    """An existing session that overlaps a proposed slot of the same therapist."""

    session_id: uuid.UUID
    program_id: uuid.UUID
    therapist_id: uuid.UUID
    starts_at: datetime
    ends_at: datetime
    original_starts_at: datetime
    proposed: Slot

    def as_problem(self) -> dict[str, Any]:
        return {
            "reason": "overlap",
            "session_id": str(self.session_id),
            "program_id": str(self.program_id),
            "therapist_id": str(self.therapist_id),
            "starts_at": rfc3339(self.starts_at),
            "ends_at": rfc3339(self.ends_at),
            "proposed_starts_at": rfc3339(self.proposed.starts_at),
            "proposed_ends_at": rfc3339(self.proposed.ends_at),
        }


def rfc3339(moment: datetime) -> str:
    """UTC with a Z, as the rest of the API writes instants."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def overlapping_bookings(
    db: AsyncSession,
    *,
    bookings: Sequence[tuple[uuid.UUID, Slot]],
    ignored_session_ids: Collection[uuid.UUID] = (),
) -> list[Clash]:
    """Every (existing session, proposed slot) pair that overlaps, for proposed slots of one or
    several therapists, in one query."""
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
    return [
        Clash(
            session_id=row.id,
            program_id=row.program_id,
            therapist_id=row.therapist_id,
            starts_at=row.starts_at,
            ends_at=row.ends_at,
            original_starts_at=row.original_starts_at,
            proposed=Slot(row.proposed_starts_at, row.proposed_ends_at),
        )
        for row in rows
    ]
