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
    # An overlap's session, rendered into the problem only when it is shown (as_problem): the
    # suggestions count hundreds of overlaps and show none of them.
    clash: Clash | None = None

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
        if self.clash is not None:
            body |= self.clash.as_problem()
        return body | self.extra


Windows = dict[str, list[AvailabilityRow]]  # weekday (MO..SU) -> that day's windows
# A therapist's weekly windows as a value: (weekday, start minute, end minute), sorted.
WindowKey = tuple[tuple[str, int, int], ...]


@dataclass
class Facts:
    """What the therapists already hold around the proposed slots."""

    clashes: list[Clash] = field(default_factory=list)
    # Each therapist's weekly windows as a value (window_key); a therapist missing has none.
    windows: dict[uuid.UUID, WindowKey] = field(default_factory=dict)
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
                clash=clash,
            )
        )
    # Therapists with the same windows in the same zone (most of them) share the availability
    # verdicts (on each proposal, and the problems alone), and those in one zone the local
    # weeks and their proposed minutes: 200 therapists and a 52-session program are judged in
    # a few milliseconds (bench/suggestions.py).
    verdicts: dict[tuple[WindowKey, str], tuple[list[Problem | None], list[Problem]]] = {}
    weeks: dict[str, list[Week]] = {}
    booked: dict[uuid.UUID, dict[date, int]] = defaultdict(dict)
    for (therapist_id, week), minutes in facts.booked_minutes.items():
        booked[therapist_id][week] = minutes
    for therapist in therapists:
        zone = ZoneInfo(therapist.timezone)
        windows = facts.windows.get(therapist.id, ())
        if (windows, zone.key) not in verdicts:
            each = [availability_problem(p, zone, windows) for p in proposals]
            verdicts[windows, zone.key] = each, [p for p in each if p is not None]
        outside, outside_only = verdicts[windows, zone.key]
        if zone.key not in weeks:
            weeks[zone.key] = proposed_weeks(proposals, zone)
        time_off = facts.time_off.get(therapist.id, [])
        found = problems[therapist.id]
        if time_off:
            for proposal, outside_availability in zip(proposals, outside, strict=True):
                if outside_availability is not None:
                    found.append(outside_availability)
                found += time_off_problems(proposal, time_off)
        else:
            found += outside_only
        found += weekly_load_problems(therapist, weeks[zone.key], booked.get(therapist.id, {}))
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


def availability_problem(proposal: Proposal, zone: ZoneInfo, windows: WindowKey) -> Problem | None:
    """Outside the weekly availability (in the therapist's zone)?"""
    start = proposal.slot.starts_at.astimezone(zone)
    end = proposal.slot.ends_at.astimezone(zone)
    # The windows of the days the session touches (and the day before), as instants.
    spans = _spans(windows, zone, start.date() - timedelta(days=1), end.date())
    if any(
        opens <= proposal.slot.starts_at and proposal.slot.ends_at <= closes
        for opens, closes in spans
    ):
        return None
    return Problem(
        "outside_availability",
        f"{start:%a %H:%M}-{end:%H:%M} ({zone.key}) is outside their weekly availability",
        proposal,
    )


def time_off_problems(proposal: Proposal, time_off: list[TimeOff]) -> list[Problem]:
    """Inside recorded time off."""
    return [
        Problem(
            "time_off", "the therapist is on time off", proposal, extra={"time_off_id": str(off.id)}
        )
        for off in time_off
        if off.starts_at < proposal.slot.ends_at and proposal.slot.starts_at < off.ends_at
    ]


def available_spans(
    windows: Windows, zone: ZoneInfo, first: date, last: date
) -> list[tuple[datetime, datetime]]:
    """The weekly windows of local dates `first`..`last` as stretches of real time, windows
    that meet or overlap merged into one (Monday's 22:00-24:00 and Tuesday's 00:00-02:00 are
    one stretch). Wall-clock times are read as everywhere (service.core.clock), so on the day
    the clocks spring forward 01:00-04:00 lasts two hours, and on the day they fall back three
    hours and a repeated hour is read the first time it occurs."""
    return _spans(window_key(windows), zone, first, last)


def window_key(windows: Windows) -> WindowKey:
    return windows_value(
        (day, w.start_minute, w.end_minute) for day, rows in windows.items() for w in rows
    )


def windows_value(windows: Iterable[tuple[str, int, int]]) -> WindowKey:
    """Weekly windows, as (weekday, start minute, end minute), as a value: sorted."""
    return tuple(sorted(windows))


def _spans(
    windows: WindowKey, zone: ZoneInfo, first: date, last: date
) -> list[tuple[datetime, datetime]]:
    spans = []
    day = first
    while day <= last:
        weekday = WEEKDAYS[day.weekday()]
        for window_day, start_minute, end_minute in windows:
            if window_day != weekday:
                continue
            opens = local_minute(day, start_minute, zone)
            closes = local_minute(day, end_minute, zone)
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


def by_week(proposals: Sequence[Proposal], zone: ZoneInfo) -> dict[date, list[Proposal]]:
    """The proposals by the local week (its Monday, in `zone`) they start in, in order."""
    found: dict[date, list[Proposal]] = defaultdict(list)
    for proposal in proposals:
        found[week_of(proposal.slot.starts_at, zone)].append(proposal)
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class Week:
    """A local week (its Monday), the proposals starting in it and their minutes."""

    monday: date
    proposals: list[Proposal]
    minutes: int


def proposed_weeks(proposals: Sequence[Proposal], zone: ZoneInfo) -> list[Week]:
    """The local weeks (in `zone`) the proposals start in, in order."""
    return [
        Week(monday, in_week, sum(p.slot.minutes for p in in_week))
        for monday, in_week in by_week(proposals, zone).items()
    ]


def weekly_load_problems(
    therapist: Therapist, weeks: Sequence[Week], booked_minutes: dict[date, int]
) -> list[Problem]:
    """Every proposal in a local week (`weeks`: the proposed weeks in the therapist's zone)
    whose total would pass the therapist's maximum (`booked_minutes`: the therapist's live
    minutes by week; a week missing has none)."""
    found = []
    most = therapist.max_weekly_minutes
    for week in weeks:
        total = booked_minutes.get(week.monday, 0) + week.minutes
        if total > most:
            found += [
                Problem(
                    "weekly_load",
                    f"the week of {week.monday} would have {total} minutes, more than the "
                    f"therapist's {therapist.max_weekly_minutes}",
                    p,
                    extra={
                        "week_start": week.monday.isoformat(),
                        "week_minutes": total,
                        "max_weekly_minutes": therapist.max_weekly_minutes,
                    },
                )
                for p in week.proposals
            ]
    return found


def blocking(problems: list[Problem], *, override: bool) -> list[Problem]:
    """The problems an admin's override does not let through."""
    return [p for p in problems if not (override and p.overridable)]
