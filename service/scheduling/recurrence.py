"""The recurrence engine: a program's schedule turned into the instants its sessions happen.

Pure functions, values in and values out: no database, no HTTP. What is guaranteed, for any
valid schedule (and checked by property tests in tests/test_recurrence.py):

- every session starts at the schedule's local wall-clock time in the program's zone, across DST
  changes, except when that local time does not exist that day (see `local_start`);
- sessions fall on days the rule allows, in strictly increasing order, one per local date;
- no session falls on an exdate, nor (with skip_holidays) on a statutory holiday of the
  organization's holiday region;
- a COUNT rule yields exactly COUNT sessions: a removed date is made up by the rule's next date
  after the last one (COUNT is the number of sessions the contract buys). UNTIL and open-ended
  rules make nothing up: they end on a date, not after a number of sessions.

Supported RRULE subset (RFC 5545 §3.3.10): FREQ=DAILY|WEEKLY|MONTHLY, INTERVAL, BYDAY (with
ordinals such as 2TU or -1FR for MONTHLY only), and COUNT or UNTIL. The rule is expanded on
local dates; DTSTART is `start_date`, which counts only when the rule allows it (dateutil's
behaviour, and what a person booking "every Tuesday from the 1st" expects).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
from dateutil import rrule as du

from service.core.clock import local_start

MAX_COUNT = 500
MAX_INTERVAL = 52
MAX_UNTIL_YEARS = 2  # UNTIL at most two calendar years after start_date
DURATION_MIN, DURATION_MAX = 15, 240
EARLIEST_START, LATEST_START = date(2000, 1, 1), date(2100, 12, 31)
# How far past a COUNT rule's natural last date make-ups are looked for. A rule whose every
# date is removed for this long (say, yearly on Christmas with skip_holidays) stops here with
# fewer than COUNT sessions instead of searching forever; validate_schedule reports it.
MAKEUP_SEARCH = timedelta(days=5 * 366)

RULE_FIELD = "schedule.rrule"
SUPPORTED_PARTS = ("FREQ", "INTERVAL", "BYDAY", "COUNT", "UNTIL")
UNSUPPORTED_PARTS = frozenset(
    {"BYSETPOS", "BYMONTH", "BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYHOUR", "BYMINUTE"}
    | {"BYSECOND", "WKST", "RSCALE", "SKIP"}
)
WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_BYDAY = re.compile(r"([+-]?\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)")
_UNTIL = re.compile(r"(\d{4})(\d{2})(\d{2})(T\d{6}Z?)?")
_NUMBER = re.compile(r"\d{1,6}")


class RuleError(ValueError):
    """A schedule that cannot be expanded, with the request field to blame (for a 422)."""

    def __init__(self, message: str, *, field: str = RULE_FIELD) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Frequency(StrEnum):
    DAILY = "DAILY"
    WEEKLY = "WEEKLY"
    MONTHLY = "MONTHLY"


_DATEUTIL_FREQ: dict[Frequency, Literal[1, 2, 3]] = {
    Frequency.DAILY: du.DAILY,
    Frequency.WEEKLY: du.WEEKLY,
    Frequency.MONTHLY: du.MONTHLY,
}


@dataclass(frozen=True)
class ByDay:
    """One BYDAY entry: weekday 0 (Monday) to 6, and for MONTHLY an optional ordinal
    (2 = second, -1 = last) within the month."""

    weekday: int
    ordinal: int | None = None


@dataclass(frozen=True)
class ParsedRule:
    freq: Frequency
    interval: int = 1
    byday: tuple[ByDay, ...] = ()
    count: int | None = None
    until: date | None = None  # inclusive local date

    @property
    def open_ended(self) -> bool:
        return self.count is None and self.until is None


@dataclass(frozen=True)
class Schedule:
    """When a program's sessions happen; start_time is a naive local wall-clock time."""

    timezone: str
    start_date: date
    start_time: time
    duration_minutes: int
    rrule: str
    exdates: frozenset[date] = frozenset()
    skip_holidays: bool = False


@dataclass(frozen=True)
class Occurrence:
    """One session: its local date in the program's zone and its instants (aware, UTC)."""

    local_date: date
    starts_at: datetime
    ends_at: datetime


def parse_rule(rrule: str) -> ParsedRule:
    """Read an RRULE value ("FREQ=WEEKLY;BYDAY=TU,TH;COUNT=20") within the supported subset.

    Raises RuleError naming what is wrong; anything outside the subset is refused rather than
    ignored, so a rule is never expanded differently from what its author meant."""
    parts: dict[str, str] = {}
    for part in rrule.strip().split(";"):
        name, sep, value = part.partition("=")
        name, value = name.strip().upper(), value.strip().upper()
        if not sep or not name or not value:
            raise RuleError(f"{part!r} is not NAME=VALUE; write e.g. FREQ=WEEKLY;COUNT=10")
        if name in parts:
            raise RuleError(f"{name} appears twice")
        if name in UNSUPPORTED_PARTS:
            raise RuleError(f"{name} is not supported; use only {', '.join(SUPPORTED_PARTS)}")
        if name not in SUPPORTED_PARTS:
            raise RuleError(f"unknown part {name}; use only {', '.join(SUPPORTED_PARTS)}")
        parts[name] = value

    if "FREQ" not in parts:
        raise RuleError("FREQ is required (DAILY, WEEKLY or MONTHLY)")
    try:
        freq = Frequency(parts["FREQ"])
    except ValueError:
        raise RuleError(
            f"FREQ={parts['FREQ']} is not supported; use DAILY, WEEKLY or MONTHLY"
        ) from None
    if "COUNT" in parts and "UNTIL" in parts:
        raise RuleError("COUNT and UNTIL cannot be used together; choose one")

    interval = _number(parts, "INTERVAL", 1, MAX_INTERVAL) or 1
    count = _number(parts, "COUNT", 1, MAX_COUNT)
    until = _until(parts["UNTIL"]) if "UNTIL" in parts else None
    byday = _byday(parts["BYDAY"], freq) if "BYDAY" in parts else ()
    return ParsedRule(freq=freq, interval=interval, byday=byday, count=count, until=until)


def is_open_ended(rrule: str) -> bool:
    """True for a rule with neither COUNT nor UNTIL: expanded only up to a caller's horizon."""
    return parse_rule(rrule).open_ended


def _number(parts: dict[str, str], name: str, low: int, high: int) -> int | None:
    if name not in parts:
        return None
    value = parts[name]
    if not _NUMBER.fullmatch(value) or not low <= int(value) <= high:
        raise RuleError(f"{name} must be a whole number from {low} to {high}, not {value!r}")
    return int(value)


def _until(value: str) -> date:
    # A date (YYYYMMDD) or a date-time (YYYYMMDDTHHMMSS, optionally Z): either way, the
    # sessions run up to and including that local date; the time of day is not used.
    match = _UNTIL.fullmatch(value)
    try:
        if match is None:
            raise ValueError(value)
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        raise RuleError(
            f"UNTIL must be a date like 20261231 (or 20261231T235959Z), not {value!r}"
        ) from None


def _byday(value: str, freq: Frequency) -> tuple[ByDay, ...]:
    entries: list[ByDay] = []
    for item in value.split(","):
        match = _BYDAY.fullmatch(item.strip())
        if match is None:
            raise RuleError(f"BYDAY entry {item!r} is not a weekday such as MO, TU or 2TU")
        ordinal = int(match[1]) if match[1] else None
        if ordinal is not None and freq is not Frequency.MONTHLY:
            raise RuleError(f"BYDAY={item} (an ordinal weekday) needs FREQ=MONTHLY")
        if ordinal is not None and not 1 <= abs(ordinal) <= 5:
            raise RuleError(f"BYDAY={item}: the ordinal must be 1 to 5 or -1 to -5")
        entry = ByDay(WEEKDAYS.index(match[2]), ordinal)
        if entry in entries:
            raise RuleError(f"BYDAY lists {item} twice")
        entries.append(entry)
    return tuple(entries)


def expand(
    schedule: Schedule,
    *,
    holiday_region: str | None,
    until: date | None = None,
    after: date | None = None,
) -> list[Occurrence]:
    """The schedule's sessions in order, each on its own local date.

    `until` (inclusive local date) caps the result: the horizon an open-ended rule needs (it
    is required then) and a window end for the others. `after` keeps only sessions on or after
    that local date; COUNT still counts from start_date, so a window of a COUNT rule shows the
    same sessions as the whole series does. Holidays are those of `holiday_region` (e.g.
    "CA-AB", "US-NY", "GB"), removed only when schedule.skip_holidays; with no region there is
    nothing to remove. Raises RuleError for a schedule validate_schedule would refuse.
    """
    rule = parse_rule(schedule.rrule)
    zone = _zone(schedule.timezone)
    if rule.open_ended and until is None:
        raise ValueError("an open-ended rule (no COUNT or UNTIL) needs `until`, a horizon")
    removed = _removed_test(schedule, holiday_region)

    last = _search_end(rule, schedule.start_date)
    if until is not None:
        last = min(last, until)
    days: list[date] = []
    for day in _rule_days(rule, schedule.start_date, last=last):
        if removed(day):
            continue
        days.append(day)
        if len(days) == rule.count:
            break

    duration = timedelta(minutes=schedule.duration_minutes)
    occurrences = []
    for day in days:
        if after is not None and day < after:
            continue
        starts_at = local_start(day, schedule.start_time, zone)
        # Elapsed time, not wall time: 60 minutes from 01:30 on a fall-back night end at
        # 01:30 again (standard time), never after 0 or 120 real minutes.
        occurrences.append(Occurrence(day, starts_at, starts_at + duration))
    return occurrences


def continuation(
    schedule: Schedule,
    *,
    holiday_region: str | None,
    start: date,
    remaining: int | None = None,
    until: date | None = None,
) -> list[Occurrence]:
    """The schedule's sessions on or after local date `start`, as a series that continues an
    earlier one from there: the rule keeps its phase from schedule.start_date (a bi-weekly
    rule stays on its weeks), its removed dates are skipped, and the series ends after
    `remaining` sessions (a COUNT rule's sessions still owed: the rule's own COUNT is the
    whole contract's, counted by the caller) or on the rule's UNTIL, capped by `until` (the
    horizon, required for an open-ended rule)."""
    rule = parse_rule(schedule.rrule)
    zone = _zone(schedule.timezone)
    if rule.open_ended and until is None:
        raise ValueError("an open-ended rule (no COUNT or UNTIL) needs `until`, a horizon")
    if rule.count is not None and remaining is None:
        raise ValueError("a COUNT rule's continuation needs `remaining`")
    removed = _removed_test(schedule, holiday_region)
    open_rule = ParsedRule(freq=rule.freq, interval=rule.interval, byday=rule.byday)
    last = rule.until or until
    if last is None:
        # A COUNT rule: `remaining` sessions lie within this many periods, plus make-ups.
        periods = timedelta(days=31 * rule.interval * ((remaining or 0) + 1))
        last = min(start + periods + MAKEUP_SEARCH, LATEST_START + MAKEUP_SEARCH)
    elif until is not None:
        last = min(last, until)
    duration = timedelta(minutes=schedule.duration_minutes)
    occurrences: list[Occurrence] = []
    if remaining is not None and remaining <= 0:
        return occurrences
    for day in _rule_days(open_rule, schedule.start_date, last=last):
        if day < start or removed(day):
            continue
        starts_at = local_start(day, schedule.start_time, zone)
        occurrences.append(Occurrence(day, starts_at, starts_at + duration))
        if remaining is not None and len(occurrences) == remaining:
            break
    return occurrences


def validate_schedule(schedule: Schedule, *, holiday_region: str | None) -> list[tuple[str, str]]:
    """Every problem with the schedule as (field, message), empty when it can be booked.

    Checks what a request schema cannot: the rule subset and its limits (COUNT ≤ 500, UNTIL
    at most two years after start_date, or open-ended), the zone, and that the removed dates
    leave the sessions the rule promises (all COUNT of them, or at least one)."""
    problems: list[tuple[str, str]] = []
    try:
        _zone(schedule.timezone)
    except RuleError as error:
        problems.append((error.field, error.message))
    if not EARLIEST_START <= schedule.start_date <= LATEST_START:
        problems.append(
            ("schedule.start_date", f"must be between {EARLIEST_START} and {LATEST_START}")
        )
    if schedule.start_time.second or schedule.start_time.microsecond:
        problems.append(("schedule.start_time", "must be whole minutes (HH:MM)"))
    if not DURATION_MIN <= schedule.duration_minutes <= DURATION_MAX:
        problems.append(
            ("schedule.duration_minutes", f"must be {DURATION_MIN} to {DURATION_MAX} minutes")
        )
    if schedule.skip_holidays and holiday_region is None:
        problems.append(
            ("schedule.skip_holidays", "the organization has no holiday_region to skip")
        )
    try:
        rule = parse_rule(schedule.rrule)
    except RuleError as error:
        return [*problems, (error.field, error.message)]
    if rule.until is not None and rule.until < schedule.start_date:
        problems.append((RULE_FIELD, "UNTIL is before start_date"))
    elif rule.until is not None and rule.until > _years_after(schedule.start_date, MAX_UNTIL_YEARS):
        problems.append((RULE_FIELD, "UNTIL must be at most two years after start_date"))
    if problems:
        return problems

    try:
        horizon = schedule.start_date + MAKEUP_SEARCH if rule.open_ended else None
        sessions = len(expand(schedule, holiday_region=holiday_region, until=horizon))
    except RuleError as error:
        return [(error.field, error.message)]
    if sessions == 0:
        problems.append((RULE_FIELD, "no session remains once exdates and holidays are removed"))
    elif rule.count is not None and sessions < rule.count:
        problems.append(
            (RULE_FIELD, f"only {sessions} of COUNT={rule.count} sessions can be scheduled")
        )
    return problems


def _years_after(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February, in a year that has none
        return date(day.year + years, 2, 28)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise RuleError(
            f"unknown time zone {name!r}; use an IANA name such as America/Edmonton",
            field="schedule.timezone",
        ) from None


def _search_end(rule: ParsedRule, start: date) -> date:
    """The last local date worth looking at (before any caller's cap)."""
    if rule.until is not None:
        return rule.until
    if rule.count is None:
        return date.max  # open-ended: expand requires the caller's horizon
    natural = list(_rule_days(rule, start, last=None))
    last = natural[-1] if natural else start
    return last + MAKEUP_SEARCH if last < date.max - MAKEUP_SEARCH else date.max


def _rule_days(rule: ParsedRule, start: date, *, last: date | None) -> Iterator[date]:
    """The rule's local dates from `start` up to `last` (inclusive), before any removal.

    Expanded on naive local midnights: dates only, so DST cannot move a date. With no `last`
    this is the rule's own series (COUNT applied, for a COUNT rule only); otherwise `last`
    bounds it, which also stops a rule that matches nothing (dateutil would scan to 9999)."""
    byday = list(rule.byday)
    if any(b.ordinal is not None for b in byday):
        # dateutil intersects plain and ordinal weekdays (BYDAY=MO,1TU gives nothing), where
        # RFC 5545 means their union: a plain MO in a month is its 1st to 5th Monday.
        byday = [
            ByDay(b.weekday, n) for b in byday for n in ((b.ordinal,) if b.ordinal else range(1, 6))
        ]
    weekdays = [
        du.weekdays[b.weekday] if b.ordinal is None else du.weekdays[b.weekday](b.ordinal)
        for b in byday
    ]
    series = du.rrule(
        _DATEUTIL_FREQ[rule.freq],
        dtstart=datetime.combine(start, time()),
        interval=rule.interval,
        byweekday=weekdays or None,
        count=rule.count if last is None else None,
        until=None if last is None else datetime.combine(last, time()),
    )
    for moment in series:
        yield moment.date()


def _removed_test(schedule: Schedule, holiday_region: str | None) -> Callable[[date], bool]:
    exdates = schedule.exdates
    if not schedule.skip_holidays or holiday_region is None:
        return exdates.__contains__
    region: str = holiday_region
    return lambda day: day in exdates or day in _holidays(region, day.year)


@lru_cache(maxsize=512)
def _holidays(region: str, year: int) -> frozenset[date]:
    """Statutory holidays of a region ("CA-AB": country CA, subdivision AB) in one year,
    including the observed days the holidays package adds (e.g. a Monday for a Sunday)."""
    country, _, subdivision = region.upper().partition("-")
    try:
        calendar = holidays.country_holidays(country, subdiv=subdivision or None, years=year)
    except NotImplementedError:
        raise RuleError(
            f"unknown holiday region {region!r}; use e.g. CA-AB or US-NY", field="holiday_region"
        ) from None
    return frozenset(calendar.keys())
