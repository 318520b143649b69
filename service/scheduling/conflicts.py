"""Time slots and clashes between them: the values the staffing rules reason about. The query
that finds clashes lives in service.programs.staffing_facts; the exclusion constraint on
sessions remains the guarantee when two requests race."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class Slot:
    starts_at: datetime
    ends_at: datetime

    @property
    def minutes(self) -> int:
        return int((self.ends_at - self.starts_at).total_seconds() // 60)


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
