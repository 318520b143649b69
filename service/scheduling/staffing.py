"""Whether therapists can take a set of session slots: the rules every staffing change (assign,
confirm, substitute, reschedule, series edits) and the suggestions are judged by.

Problems, each tied to a slot where it has one:
  overlap               another live session of the therapist (never overridable)
  missing_credentials   the offering requires a credential the therapist lacks (never)
  inactive              the therapist no longer works (never)
  outside_availability  not inside a weekly window (windows that meet, as 22:00-24:00 and the
                        next day's 00:00-02:00, are one), in the therapist's own time zone
  time_off              inside recorded time off
  weekly_load           the week (Monday-Sunday, therapist's zone) would exceed max_weekly_minutes;
                        a session counts, with its real length, in the week it starts in
An admin may override availability, time off and weekly load, never the others.

Pure: what the therapists already hold (`Facts`) is loaded, set-based, by
service.programs.staffing_facts; the decision is made here.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from models.offerings import Offering
from models.therapists import AvailabilityRow, Therapist, TimeOff
from service.core.clock import local_minute
from service.scheduling.conflicts import Clash, Slot, rfc3339

OVERRIDABLE = frozenset({"outside_availability", "time_off", "weekly_load"})
WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
# Weekly minutes are counted over whole weeks around the proposals: a margin of a week and a
# day on each side covers every week a proposal touches, in any zone.
WEEK_MARGIN = timedelta(days=8)


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


Windows = dict[str, list[AvailabilityRow]]  # weekday (MO..SU) -> that day's windows


@dataclass
class Facts:
    """What the therapists already hold around the proposed slots."""

    clashes: list[Clash] = field(default_factory=list)
    windows: dict[uuid.UUID, Windows] = field(default_factory=dict)
    time_off: dict[uuid.UUID, list[TimeOff]] = field(default_factory=dict)
    # Minutes of live sessions per therapist and local week (its Monday), the ignored excluded.
    booked_minutes: dict[tuple[uuid.UUID, date], int] = field(default_factory=dict)


def span(proposals: Sequence[Proposal]) -> tuple[datetime, datetime]:
    """From the earliest start to the latest end of the proposals."""
    return (
        min(p.slot.starts_at for p in proposals),
        max(p.slot.ends_at for p in proposals),
    )


def week_of(moment: datetime, zone: ZoneInfo) -> date:
    """The Monday of the local week `moment` falls in."""
    local = moment.astimezone(zone).date()
    return local - timedelta(days=local.weekday())


def evaluate(
    therapists: Sequence[Therapist],
    offering: Offering,
    proposals: Sequence[Proposal],
    facts: Facts,
) -> dict[uuid.UUID, list[Problem]]:
    """Every problem each therapist would have taking all the proposals."""
    problems = {t.id: standing_problems(t, offering) for t in therapists}
    if not proposals:
        return problems
    by_slot = {p.slot: p for p in proposals}
    for clash in facts.clashes:
        problems[clash.therapist_id].append(
            Problem(
                "overlap",
                "the therapist already has a session at this time",
                by_slot.get(clash.proposed),
                extra=clash.as_problem(),
            )
        )
    for therapist in therapists:
        zone = ZoneInfo(therapist.timezone)
        windows = facts.windows.get(therapist.id, {})
        time_off = facts.time_off.get(therapist.id, [])
        for proposal in proposals:
            problems[therapist.id] += calendar_problems(proposal, zone, windows, time_off)
        problems[therapist.id] += weekly_load_problems(
            therapist, zone, proposals, facts.booked_minutes
        )
    return problems


def standing_problems(therapist: Therapist, offering: Offering) -> list[Problem]:
    """What stops a therapist from taking any session of the offering."""
    found = []
    if not therapist.active:
        found.append(Problem("inactive", "the therapist is not active"))
    missing = sorted(set(offering.required_credentials) - set(therapist.credentials))
    if missing:
        found.append(
            Problem(
                "missing_credentials",
                f"the offering requires {', '.join(missing)}",
                extra={"missing_credentials": missing},
            )
        )
    return found


def calendar_problems(
    proposal: Proposal, zone: ZoneInfo, windows: Windows, time_off: list[TimeOff]
) -> list[Problem]:
    """Outside the weekly availability (in the therapist's zone), or inside time off."""
    found = []
    start = proposal.slot.starts_at.astimezone(zone)
    end = proposal.slot.ends_at.astimezone(zone)
    # The windows of the days the session touches (and the day before), as instants.
    spans = available_spans(windows, zone, start.date() - timedelta(days=1), end.date())
    inside = any(
        opens <= proposal.slot.starts_at and proposal.slot.ends_at <= closes
        for opens, closes in spans
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


def available_spans(
    windows: Windows, zone: ZoneInfo, first: date, last: date
) -> list[tuple[datetime, datetime]]:
    """The weekly windows of local dates `first`..`last` as stretches of real time, windows
    that meet or overlap merged into one (Monday's 22:00-24:00 and Tuesday's 00:00-02:00 are
    one stretch). Wall-clock times are read as everywhere (service.core.clock), so on the day
    the clocks spring forward 01:00-04:00 lasts two hours, and on the day they fall back three
    hours and a repeated hour is read the first time it occurs."""
    spans = []
    day = first
    while day <= last:
        for window in windows.get(WEEKDAYS[day.weekday()], []):
            opens = local_minute(day, window.start_minute, zone)
            closes = local_minute(day, window.end_minute, zone)
            if opens < closes:  # a window wholly inside a spring-forward gap lasts no time
                spans.append((opens, closes))
        day += timedelta(days=1)
    return merged(spans)


def merged(spans: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Stretches of time, in order, those that meet or overlap joined."""
    found: list[tuple[datetime, datetime]] = []
    for begins, ends in sorted(spans):
        if found and begins <= found[-1][1]:
            found[-1] = (found[-1][0], max(found[-1][1], ends))
        else:
            found.append((begins, ends))
    return found


def weekly_load_problems(
    therapist: Therapist,
    zone: ZoneInfo,
    proposals: Sequence[Proposal],
    booked_minutes: dict[tuple[uuid.UUID, date], int],
) -> list[Problem]:
    """Every proposal in a local week whose total would pass the therapist's maximum."""
    by_week: dict[date, list[Proposal]] = defaultdict(list)
    for proposal in proposals:
        by_week[week_of(proposal.slot.starts_at, zone)].append(proposal)
    found = []
    for week, in_week in sorted(by_week.items()):
        total = booked_minutes.get((therapist.id, week), 0) + sum(p.slot.minutes for p in in_week)
        if total > therapist.max_weekly_minutes:
            found += [
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
    return found


def blocking(problems: list[Problem], *, override: bool) -> list[Problem]:
    """The problems an admin's override does not let through."""
    return [p for p in problems if not (override and p.overridable)]
