"""Whether therapists can take a set of session slots: the one place every staffing change
(assign, confirm, substitute, reschedule, series edits) and the suggestions are checked.

Problems, each tied to a slot where it has one:
  overlap               another live session of the therapist (never overridable)
  missing_credentials   the offering requires a credential the therapist lacks (never)
  inactive              the therapist no longer works (never)
  outside_availability  not inside a weekly window, in the therapist's own time zone
  time_off              inside recorded time off
  weekly_load           the week (Monday-Sunday, therapist's zone) would exceed max_weekly_minutes
An admin may override availability, time off and weekly load, never the others. Everything is
computed for all therapists and slots at once: five queries, whatever their number.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.offerings import Offering
from models.therapists import AvailabilityRow, Therapist, TimeOff
from models.types import Role
from service.core import audit
from service.core.auth import Principal
from service.core.errors import Conflict, Forbidden
from service.scheduling.conflicts import Slot, overlapping_bookings, rfc3339

OVERRIDABLE = frozenset({"outside_availability", "time_off", "weekly_load"})
WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")

_WEEKLY_MINUTES = text(
    """
    SELECT s.therapist_id,
           date_trunc('week', timezone(t.timezone, s.starts_at))::date AS week,
           sum(extract(epoch FROM s.ends_at - s.starts_at) / 60)::int AS minutes
    FROM sessions s JOIN therapists t ON t.id = s.therapist_id
    WHERE s.therapist_id = ANY(CAST(:therapists AS uuid[]))
      AND s.status IN ('scheduled', 'completed', 'no_show')
      AND NOT (s.id = ANY(CAST(:ignored AS uuid[])))
      AND s.starts_at >= :low AND s.starts_at < :high
    GROUP BY 1, 2
    """
)


@dataclass(frozen=True)
class Proposal:
    """A slot to staff; `session_id` when an existing session is moved or handed over."""

    slot: Slot
    session_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Problem:
    reason: str
    detail: str
    proposal: Proposal | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def overridable(self) -> bool:
        return self.reason in OVERRIDABLE

    def as_problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {"reason": self.reason, "detail": self.detail}
        if self.proposal is not None:
            if self.proposal.session_id is not None:
                body["session_id"] = str(self.proposal.session_id)
            body["proposed_starts_at"] = rfc3339(self.proposal.slot.starts_at)
            body["proposed_ends_at"] = rfc3339(self.proposal.slot.ends_at)
        return body | self.extra


def _week_of(moment: datetime, zone: ZoneInfo) -> date:
    local = moment.astimezone(zone).date()
    return local - timedelta(days=local.weekday())


def _minutes(slot: Slot) -> int:
    return int((slot.ends_at - slot.starts_at).total_seconds() // 60)


async def evaluate(
    db: AsyncSession,
    *,
    therapists: Sequence[Therapist],
    offering: Offering,
    proposals: Sequence[Proposal],
    ignored_session_ids: Collection[uuid.UUID] = (),
) -> dict[uuid.UUID, list[Problem]]:
    """Every problem each therapist would have taking all the proposals."""
    problems: dict[uuid.UUID, list[Problem]] = {t.id: [] for t in therapists}
    if not therapists:
        return problems
    ids = [t.id for t in therapists]
    by_id = {t.id: t for t in therapists}

    for therapist in therapists:
        if not therapist.active:
            problems[therapist.id].append(Problem("inactive", "the therapist is not active"))
        missing = sorted(set(offering.required_credentials) - set(therapist.credentials))
        if missing:
            problems[therapist.id].append(
                Problem(
                    "missing_credentials",
                    f"the offering requires {', '.join(missing)}",
                    extra={"missing_credentials": missing},
                )
            )
    if not proposals:
        return problems

    # 1. Overlaps with other live sessions.
    by_slot = {p.slot: p for p in proposals}
    for clash in await overlapping_bookings(
        db,
        bookings=[(t, p.slot) for t in ids for p in proposals],
        ignored_session_ids=ignored_session_ids,
    ):
        problems[clash.therapist_id].append(
            Problem(
                "overlap",
                "the therapist already has a session at this time",
                by_slot.get(clash.proposed),
                extra=clash.as_problem() | {"reason": "overlap"},
            )
        )

    # 2. Weekly availability, in each therapist's own zone.
    windows: dict[uuid.UUID, dict[str, list[AvailabilityRow]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for row in (
        await db.execute(select(AvailabilityRow).where(col(AvailabilityRow.therapist_id).in_(ids)))
    ).scalars():
        windows[row.therapist_id][row.weekday].append(row)
    # 3. Time off touching the proposals' span.
    low = min(p.slot.starts_at for p in proposals)
    high = max(p.slot.ends_at for p in proposals)
    time_off: dict[uuid.UUID, list[TimeOff]] = defaultdict(list)
    for off in (
        await db.execute(
            select(TimeOff).where(
                col(TimeOff.therapist_id).in_(ids),
                col(TimeOff.starts_at) < high,
                col(TimeOff.ends_at) > low,
            )
        )
    ).scalars():
        time_off[off.therapist_id].append(off)
    # 4. Minutes already booked per therapist and local week.
    booked: dict[tuple[uuid.UUID, date], int] = defaultdict(int)
    week_row: Any
    for week_row in await db.execute(
        _WEEKLY_MINUTES,
        {
            "therapists": ids,
            "ignored": list(ignored_session_ids),
            "low": low - timedelta(days=8),
            "high": high + timedelta(days=8),
        },
    ):
        booked[(week_row.therapist_id, week_row.week)] += week_row.minutes

    for therapist_id, therapist in by_id.items():
        zone = ZoneInfo(therapist.timezone)
        proposed_by_week: dict[date, list[Proposal]] = defaultdict(list)
        for proposal in proposals:
            problems[therapist_id] += _calendar_problems(
                proposal, zone, windows[therapist_id], time_off[therapist_id]
            )
            proposed_by_week[_week_of(proposal.slot.starts_at, zone)].append(proposal)
        for week, in_week in sorted(proposed_by_week.items()):
            total = booked[(therapist_id, week)] + sum(_minutes(p.slot) for p in in_week)
            if total > therapist.max_weekly_minutes:
                problems[therapist_id] += [
                    Problem(
                        "weekly_load",
                        f"the week of {week} would have {total} minutes, more than the "
                        f"therapist's {therapist.max_weekly_minutes}",
                        p,
                        extra={
                            "week_start": week.isoformat(),
                            "week_minutes": total,
                            "max_weekly_minutes": therapist.max_weekly_minutes,
                        },
                    )
                    for p in in_week
                ]
    return problems


def _calendar_problems(
    proposal: Proposal,
    zone: ZoneInfo,
    windows: dict[str, list[AvailabilityRow]],
    time_off: list[TimeOff],
) -> list[Problem]:
    found = []
    start = proposal.slot.starts_at.astimezone(zone)
    end = proposal.slot.ends_at.astimezone(zone)
    inside = start.date() == end.date() and any(
        w.start_time <= start.time() and end.time() <= w.end_time
        for w in windows.get(WEEKDAYS[start.weekday()], [])
    )
    if not inside:
        found.append(
            Problem(
                "outside_availability",
                f"{start:%a %H:%M}-{end:%H:%M} ({zone.key}) is outside their weekly availability",
                proposal,
            )
        )
    for off in time_off:
        if off.starts_at < proposal.slot.ends_at and proposal.slot.starts_at < off.ends_at:
            found.append(
                Problem(
                    "time_off",
                    "the therapist is on time off",
                    proposal,
                    extra={"time_off_id": str(off.id)},
                )
            )
    return found


class OverriddenProblems(BaseModel):
    """What an admin's override let through, as the audit trail keeps it."""

    therapist_id: uuid.UUID
    overridden: list[dict[str, Any]]


async def require_staffable(
    db: AsyncSession,
    principal: Principal,
    *,
    therapist: Therapist,
    offering: Offering,
    proposals: Sequence[Proposal],
    audit_entity: tuple[str, uuid.UUID, uuid.UUID],
    ignored_session_ids: Collection[uuid.UUID] = (),
    override: bool = False,
) -> None:
    """Raise one Conflict listing every problem; with an admin's `override`, let availability,
    time off and weekly load through and audit what was overridden on `audit_entity`
    (entity type, entity id, organization id)."""
    if override and principal.role != Role.admin:
        raise Forbidden("Only an admin may override staffing rules")
    problems = (
        await evaluate(
            db,
            therapists=[therapist],
            offering=offering,
            proposals=proposals,
            ignored_session_ids=ignored_session_ids,
        )
    )[therapist.id]
    blocking = [p for p in problems if not (override and p.overridable)]
    if blocking:
        raise Conflict(
            f"The therapist cannot take {len({id(p.proposal) for p in blocking})} of the "
            f"{len(proposals)} session(s) proposed",
            conflicts=[p.as_problem() for p in blocking],
        )
    if problems:
        entity_type, entity_id, organization_id = audit_entity
        await audit.record(
            db,
            principal,
            action=f"{entity_type}.staffing_overridden",
            entity_type=entity_type,
            entity_id=entity_id,
            organization_id=organization_id,
            after=OverriddenProblems(
                therapist_id=therapist.id, overridden=[p.as_problem() for p in problems]
            ),
        )
