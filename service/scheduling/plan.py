"""A program's planned occurrences: the recurrence engine applied to a program's schedule,
bounded by the rolling horizon for open-ended rules. Pure: values in, values out."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta

from models.programs import Program, Schedule
from service.core.clock import local_today
from service.scheduling import recurrence
from service.scheduling.conflicts import Slot


def engine_schedule(schedule: Schedule, duration_minutes: int) -> recurrence.Schedule:
    """A program's schedule (as booked, or as stored) for the recurrence engine."""
    return recurrence.Schedule(
        timezone=schedule.timezone,
        start_date=schedule.start_date,
        start_time=schedule.start_time,
        duration_minutes=duration_minutes,
        rrule=schedule.rrule,
        exdates=frozenset(schedule.exdates),
        skip_holidays=schedule.skip_holidays,
    )


def horizon_end(today: date, weeks: int) -> date:
    return today + timedelta(weeks=weeks)


def plan(
    program: Program,
    *,
    holiday_region: str | None,
    until: date | None,
    after: date | None = None,
) -> list[recurrence.Occurrence]:
    """The program's occurrences up to `until` (inclusive; required for open-ended rules),
    from `after` (inclusive) if given."""
    return recurrence.expand(
        engine_schedule(program.schedule(), program.duration_minutes),
        holiday_region=holiday_region,
        until=until,
        after=after,
    )


def planned(
    program: Program,
    *,
    holiday_region: str | None,
    horizon_weeks: int,
    after: date | None = None,
) -> list[recurrence.Occurrence]:
    """The whole series for a COUNT or UNTIL rule (at most 500 sessions or two years); an
    open-ended rule up to the rolling horizon, counted from today or the start if later."""
    until = None
    if recurrence.is_open_ended(program.rrule):
        first_day = max(local_today(program.timezone), program.start_date)
        until = horizon_end(first_day, horizon_weeks)
    return plan(program, holiday_region=holiday_region, until=until, after=after)


Numbered = list[tuple[int, recurrence.Occurrence]]


def series(program: Program, *, holiday_region: str | None, until: date | None) -> Numbered:
    """The program's current series with each session's occurrence number: the schedule's
    sessions from `series_start` on are occurrences `series_offset` + 1, + 2, ... (up to the
    contract's COUNT, the rule's UNTIL, or `until`, required for an open-ended rule)."""
    rule = recurrence.parse_rule(program.rrule)
    occurrences = recurrence.continuation(
        engine_schedule(program.schedule(), program.duration_minutes),
        holiday_region=holiday_region,
        start=program.series_start,
        remaining=None if rule.count is None else rule.count - program.series_offset,
        until=until,
    )
    return [(program.series_offset + n, o) for n, o in enumerate(occurrences, start=1)]


def slots(occurrences: list[recurrence.Occurrence]) -> list[Slot]:
    return [Slot(o.starts_at, o.ends_at) for o in occurrences]


@dataclass(frozen=True)
class Preview:
    """What booking a schedule would create: its sessions (`made_up` marks those added after
    the rule's own last date to replace removed ones, so a COUNT contract keeps its number) and
    the dates the rule names that are left out (`reason`: "holiday" or "excluded date")."""

    sessions: list[tuple[recurrence.Occurrence, bool]]
    skipped: list[tuple[date, str]]


def preview(
    schedule: recurrence.Schedule, *, holiday_region: str | None, until: date | None
) -> Preview:
    """The schedule expanded twice, as booked and with nothing removed: the difference is what
    is skipped, and what lies past the plain rule's last date is made up."""
    booked = recurrence.expand(schedule, holiday_region=holiday_region, until=until)
    plain = recurrence.expand(
        replace(schedule, exdates=frozenset(), skip_holidays=False),
        holiday_region=None,
        until=until,
    )
    kept = {o.local_date for o in booked}
    last_plain = plain[-1].local_date if plain else None
    skipped = [
        (o.local_date, "excluded date" if o.local_date in schedule.exdates else "holiday")
        for o in plain
        if o.local_date not in kept
    ]
    return Preview(
        sessions=[(o, last_plain is not None and o.local_date > last_plain) for o in booked],
        skipped=skipped,
    )
