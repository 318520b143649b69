"""The recurrence engine: DST, holidays, make-ups and the RRULE subset.

Example tests pin the cases named in the programs issue (DST weeks in Edmonton and New York,
Family Day, New Year, BYDAY=2TU, 02:30 on a spring-forward night). Property tests compare the
engine with a brute-force oracle written independently here: one day at a time through the
calendar for the dates, and the zone's observed offsets (not PEP 495 folds) for the instants.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from itertools import pairwise
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.scheduling import recurrence
from service.scheduling.recurrence import ByDay, Frequency, Schedule

NY, EDMONTON = "America/New_York", "America/Edmonton"


def on(*days: str) -> list[date]:
    return [date.fromisoformat(day) for day in days]


def at_utc(*instants: str) -> list[datetime]:
    return [datetime.fromisoformat(instant).replace(tzinfo=UTC) for instant in instants]


def program(zone: str, start: str, at: str, rule: str, **extra) -> Schedule:
    extra.setdefault("duration_minutes", 60)
    return Schedule(zone, date.fromisoformat(start), time.fromisoformat(at), rrule=rule, **extra)


def dates_of(schedule: Schedule, region: str | None = None, **window) -> list[date]:
    return [o.local_date for o in recurrence.expand(schedule, holiday_region=region, **window)]


def starts_of(schedule: Schedule) -> list[datetime]:
    return [o.starts_at for o in recurrence.expand(schedule, holiday_region=None)]


# --- the named cases ---------------------------------------------------------------


def test_edmonton_march_dst_week_keeps_10_00_local():
    # 2026-03-08 02:00: MST (UTC-7) becomes MDT (UTC-6).
    daily = program(EDMONTON, "2026-03-06", "10:00", "FREQ=DAILY;COUNT=4")
    assert starts_of(daily) == at_utc(
        "2026-03-06 17:00", "2026-03-07 17:00", "2026-03-08 16:00", "2026-03-09 16:00"
    )


def test_edmonton_november_dst_week_keeps_10_00_local():
    # 2025-11-02 02:00: MDT (UTC-6) becomes MST (UTC-7).
    weekly = program(EDMONTON, "2025-10-27", "10:00", "FREQ=WEEKLY;BYDAY=MO,SU;COUNT=3")
    assert starts_of(weekly) == at_utc("2025-10-27 16:00", "2025-11-02 17:00", "2025-11-03 17:00")


def test_alberta_keeps_utc_minus_6_from_november_2026():
    # tzdata 2026f: Alberta stays on UTC-6 all year; no fall back on 2026-11-01.
    weekly = program(EDMONTON, "2026-10-26", "10:00", "FREQ=WEEKLY;BYDAY=MO,SU;COUNT=3")
    assert starts_of(weekly) == at_utc("2026-10-26 16:00", "2026-11-01 16:00", "2026-11-02 16:00")


def test_new_york_march_and_november_dst_weeks_keep_18_30_local():
    march = program(NY, "2026-03-05", "18:30", "FREQ=WEEKLY;BYDAY=TH,SU;COUNT=3")
    assert starts_of(march) == at_utc("2026-03-05 23:30", "2026-03-08 22:30", "2026-03-12 22:30")
    november = program(NY, "2026-10-29", "18:30", "FREQ=WEEKLY;BYDAY=TH,SU;COUNT=3")
    assert starts_of(november) == at_utc("2026-10-29 22:30", "2026-11-01 23:30", "2026-11-05 23:30")


def test_an_ambiguous_fall_back_time_is_its_first_occurrence():
    # 01:30 happens twice on a fall-back night, first in daylight time.
    for zone, day, first in (
        (NY, "2026-11-01", "2026-11-01 05:30"),
        (EDMONTON, "2025-11-02", "2025-11-02 07:30"),
    ):
        once = program(zone, day, "01:30", "FREQ=DAILY;COUNT=1")
        assert starts_of(once) == at_utc(first)


def test_a_0230_daily_session_on_a_spring_forward_night_moves_to_0330_that_day():
    schedule = program(NY, "2027-03-13", "02:30", "FREQ=DAILY;COUNT=3", duration_minutes=45)
    occurrences = recurrence.expand(schedule, holiday_region=None)
    assert [o.local_date for o in occurrences] == on("2027-03-13", "2027-03-14", "2027-03-15")
    # 02:30 EST; 02:30 read with the offset before the gap, i.e. 03:30 EDT; 02:30 EDT.
    assert [o.starts_at for o in occurrences] == at_utc(
        "2027-03-13 07:30", "2027-03-14 07:30", "2027-03-15 06:30"
    )
    assert occurrences[1].starts_at.astimezone(ZoneInfo(NY)).time() == time(3, 30)
    assert occurrences[1].ends_at == at_utc("2027-03-14 08:15")[0]


def test_a_monday_program_skips_alberta_family_day_and_makes_it_up_at_the_end():
    # Family Day 2026 is the third Monday of February, the 16th.
    mondays = program(EDMONTON, "2026-02-02", "09:00", "FREQ=WEEKLY;BYDAY=MO;COUNT=4")
    assert dates_of(mondays, "CA-AB") == on("2026-02-02", "2026-02-09", "2026-02-16", "2026-02-23")
    skipping = program(EDMONTON, "2026-02-02", "09:00", mondays.rrule, skip_holidays=True)
    assert dates_of(skipping, "CA-AB") == on("2026-02-02", "2026-02-09", "2026-02-23", "2026-03-02")
    assert dates_of(skipping, "GB") == dates_of(mondays)  # not a holiday in Great Britain
    assert dates_of(skipping, None) == dates_of(mondays)  # no region, nothing to skip


def test_a_series_crossing_new_year_rolls_into_january():
    fridays = program(EDMONTON, "2026-12-18", "15:00", "FREQ=WEEKLY;BYDAY=FR;COUNT=4")
    assert dates_of(fridays) == on("2026-12-18", "2026-12-25", "2027-01-01", "2027-01-08")
    # Christmas and New Year's Day are skipped and made up after the last Friday.
    skipping = program(EDMONTON, "2026-12-18", "15:00", fridays.rrule, skip_holidays=True)
    assert dates_of(skipping, "CA-AB") == on("2026-12-18", "2027-01-08", "2027-01-15", "2027-01-22")


def test_second_tuesday_and_last_friday_of_each_month():
    second_tuesdays = program(NY, "2026-01-01", "10:00", "FREQ=MONTHLY;BYDAY=2TU;COUNT=6")
    assert dates_of(second_tuesdays) == on(
        "2026-01-13", "2026-02-10", "2026-03-10", "2026-04-14", "2026-05-12", "2026-06-09"
    )
    last_fridays = program(NY, "2026-01-01", "10:00", "FREQ=MONTHLY;BYDAY=-1FR;COUNT=3")
    assert dates_of(last_fridays) == on("2026-01-30", "2026-02-27", "2026-03-27")
    # Plain and ordinal weekdays together are a union (dateutil alone would intersect them).
    mixed = program(NY, "2026-01-01", "10:00", "FREQ=MONTHLY;BYDAY=MO,1TU;COUNT=6")
    assert dates_of(mixed) == on(
        "2026-01-05", "2026-01-06", "2026-01-12", "2026-01-19", "2026-01-26", "2026-02-02"
    )


def test_exdates_are_made_up_on_the_rules_pattern_for_count_rules_only():
    skip = frozenset(on("2026-09-03"))
    count = program(NY, "2026-09-01", "16:00", "FREQ=WEEKLY;BYDAY=TU,TH;COUNT=4", exdates=skip)
    assert dates_of(count) == on("2026-09-01", "2026-09-08", "2026-09-10", "2026-09-15")
    until = program(NY, "2026-09-01", "16:00", "FREQ=WEEKLY;BYDAY=TU,TH;UNTIL=20260910")
    assert dates_of(until) == on("2026-09-01", "2026-09-03", "2026-09-08", "2026-09-10")
    until = program(NY, "2026-09-01", "16:00", until.rrule, exdates=skip)
    assert dates_of(until) == on("2026-09-01", "2026-09-08", "2026-09-10")  # nothing made up


def test_open_ended_rules_need_a_horizon_and_windows_cut_the_same_series():
    open_ended = program(NY, "2026-09-01", "16:00", "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU")
    assert recurrence.is_open_ended(open_ended.rrule)
    with pytest.raises(ValueError, match="horizon"):
        recurrence.expand(open_ended, holiday_region=None)
    window = dates_of(open_ended, until=date(2026, 10, 13), after=date(2026, 9, 15))
    assert window == on("2026-09-15", "2026-09-29", "2026-10-13")
    count = program(
        NY, "2026-09-01", "16:00", "FREQ=DAILY;COUNT=5", exdates=frozenset(on("2026-09-02"))
    )
    assert dates_of(count, after=date(2026, 9, 5)) == on("2026-09-05", "2026-09-06")
    assert dates_of(count, until=date(2026, 9, 3)) == on("2026-09-01", "2026-09-03")


# --- the rule subset and validation --------------------------------------------------------


def test_parse_rule_reads_the_supported_subset():
    rule = recurrence.parse_rule("freq=monthly;interval=2;byday=2TU,-1FR;until=20271231T235959Z")
    days = (ByDay(1, 2), ByDay(4, -1))
    assert rule == recurrence.ParsedRule(Frequency.MONTHLY, 2, days, until=date(2027, 12, 31))
    assert not rule.open_ended


@pytest.mark.parametrize(
    ("rrule", "message"),
    [
        ("", "NAME=VALUE"),
        ("FREQ=WEEKLY;", "NAME=VALUE"),
        ("BYDAY=MO", "FREQ is required"),
        ("FREQ=YEARLY", "FREQ=YEARLY is not supported"),
        ("FREQ=WEEKLY;COUNT=3;UNTIL=20270101", "COUNT and UNTIL"),
        ("FREQ=WEEKLY;COUNT=501", "COUNT must be a whole number from 1 to 500"),
        ("FREQ=WEEKLY;INTERVAL=0", "INTERVAL must be a whole number from 1 to 52"),
        ("FREQ=WEEKLY;INTERVAL=two", "INTERVAL must be"),
        ("FREQ=WEEKLY;BYDAY=2TU", "needs FREQ=MONTHLY"),
        ("FREQ=MONTHLY;BYDAY=6TU", "ordinal must be 1 to 5"),
        ("FREQ=MONTHLY;BYDAY=0TU", "ordinal must be 1 to 5"),
        ("FREQ=WEEKLY;BYDAY=TUE", "not a weekday"),
        ("FREQ=WEEKLY;BYDAY=TU,TU", "twice"),
        ("FREQ=WEEKLY;FREQ=DAILY", "FREQ appears twice"),
        ("FREQ=WEEKLY;UNTIL=20270230", "UNTIL must be a date"),
        ("FREQ=WEEKLY;UNTIL=2027-01-01", "UNTIL must be a date"),
        ("FREQ=MONTHLY;BYSETPOS=-1", "BYSETPOS is not supported"),
        ("FREQ=DAILY;BYHOUR=9", "BYHOUR is not supported"),
        ("FREQ=WEEKLY;COLOR=RED", "unknown part COLOR"),
        ("RRULE:FREQ=WEEKLY", "unknown part RRULE:FREQ"),
    ],
)
def test_parse_rule_refuses_what_it_cannot_honour(rrule: str, message: str):
    with pytest.raises(recurrence.RuleError, match=message) as caught:
        recurrence.parse_rule(rrule)
    assert caught.value.field == "schedule.rrule"


def test_validate_schedule_names_every_problem():
    fine = program(EDMONTON, "2026-01-05", "09:00", "FREQ=WEEKLY;UNTIL=20280105")
    assert recurrence.validate_schedule(fine, holiday_region=None) == []
    extra = {"duration_minutes": 300, "skip_holidays": True}
    bad = program("Mars/Olympus", "2026-01-05", "09:00:30", "FREQ=WEEKLY;UNTIL=20280106", **extra)
    assert [field for field, _ in recurrence.validate_schedule(bad, holiday_region=None)] == [
        "schedule.timezone", "schedule.start_time", "schedule.duration_minutes",
        "schedule.skip_holidays", "schedule.rrule",
    ]  # fmt: skip
    before = program(EDMONTON, "2026-01-05", "09:00", "FREQ=DAILY;UNTIL=20260104")
    assert recurrence.validate_schedule(before, holiday_region=None) == [
        ("schedule.rrule", "UNTIL is before start_date")
    ]


def test_validate_schedule_refuses_a_rule_left_without_enough_sessions():
    # Every yearly New Year's Day is a holiday: nothing can be delivered, nothing made up.
    rule = "FREQ=MONTHLY;INTERVAL=12;COUNT=3"
    new_years = program(EDMONTON, "2026-01-01", "09:00", rule, skip_holidays=True)
    assert recurrence.expand(new_years, holiday_region="CA-AB") == []
    assert recurrence.validate_schedule(new_years, holiday_region="CA-AB") == [
        ("schedule.rrule", "no session remains once exdates and holidays are removed")
    ]
    # Christmas is a holiday and every other 25 June until the search ends is an exdate.
    june = frozenset(date(year, 6, 25) for year in range(2027, 2033))
    rule = "FREQ=MONTHLY;INTERVAL=6;COUNT=2"
    summers = program(EDMONTON, "2026-06-25", "09:00", rule, exdates=june, skip_holidays=True)
    assert recurrence.validate_schedule(summers, holiday_region="CA-AB") == [
        ("schedule.rrule", "only 1 of COUNT=2 sessions can be scheduled")
    ]
    assert recurrence.validate_schedule(new_years, holiday_region="XX") == [
        ("holiday_region", "unknown holiday region 'XX'; use e.g. CA-AB or US-NY")
    ]


# --- properties against a brute-force oracle -----------------------------------------------

ZONES = [
    "UTC", "America/Edmonton", "America/New_York", "America/St_Johns", "America/Santiago",
    "America/Havana", "Europe/London", "Europe/Berlin", "Africa/Casablanca", "Australia/Sydney",
    "Australia/Lord_Howe", "Pacific/Chatham", "Asia/Kolkata",
]  # fmt: skip
WEEKDAY_CODES = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")


@dataclass(frozen=True)
class Drawn:
    """A rule as drawn, kept apart from the engine's parser so the oracle cannot share a bug."""

    freq: str
    interval: int
    byday: tuple[tuple[int, int | None], ...]
    count: int | None
    until: date | None

    def text(self) -> str:
        parts = [f"FREQ={self.freq}", f"INTERVAL={self.interval}"]
        if self.byday:
            days = (f"{n or ''}{WEEKDAY_CODES[wd]}" for wd, n in self.byday)
            parts.append("BYDAY=" + ",".join(days))
        if self.count is not None:
            parts.append(f"COUNT={self.count}")
        if self.until is not None:
            parts.append(f"UNTIL={self.until:%Y%m%d}")
        return ";".join(parts)


def allowed(rule: Drawn, start: date, day: date) -> bool:
    weekdays = {wd for wd, _ in rule.byday}
    if rule.freq == "DAILY":
        return (day - start).days % rule.interval == 0 and (
            not weekdays or day.weekday() in weekdays
        )
    if rule.freq == "WEEKLY":
        weeks = ((day - timedelta(day.weekday())) - (start - timedelta(start.weekday()))).days // 7
        return weeks % rule.interval == 0 and day.weekday() in (weekdays or {start.weekday()})
    months = (day.year - start.year) * 12 + day.month - start.month
    if months % rule.interval:
        return False
    if not rule.byday:
        return day.day == start.day
    days_in_month = calendar.monthrange(day.year, day.month)[1]
    for wd, n in rule.byday:
        nth = (
            (day.day - 1) // 7 + 1 if n is None or n > 0 else -((days_in_month - day.day) // 7 + 1)
        )
        if day.weekday() == wd and (n is None or n == nth):
            return True
    return False


@cache
def holiday_dates(region: str, year: int) -> frozenset[date]:
    country, _, subdivision = region.partition("-")
    return frozenset(holidays.country_holidays(country, subdiv=subdivision or None, years=year))


def oracle_dates(
    rule: Drawn, schedule: Schedule, region: str | None, horizon: date | None
) -> list[date]:
    def removed(day: date) -> bool:
        holiday = schedule.skip_holidays and region and day in holiday_dates(region, day.year)
        return day in schedule.exdates or bool(holiday)

    last = min(d for d in (rule.until, horizon, date(2100, 1, 1)) if d is not None)
    found: list[date] = []
    day = schedule.start_date
    while day <= last and len(found) != rule.count:
        if allowed(rule, schedule.start_date, day) and not removed(day):
            found.append(day)
        day += timedelta(1)
    return found


def oracle_start(day: date, at: time, zone: ZoneInfo) -> datetime:
    """RFC 5545 §3.3.5 from the offsets the zone really uses around that day."""
    wall = datetime.combine(day, at)
    noon = datetime.combine(day, time(12), UTC)
    offsets = {(noon + timedelta(hours=h)).astimezone(zone).utcoffset() for h in range(-36, 37, 3)}
    candidates = sorted((wall - off).replace(tzinfo=UTC) for off in offsets if off is not None)
    real = [c for c in candidates if c.astimezone(zone).replace(tzinfo=None) == wall]
    if real:
        return real[0]  # the first of an ambiguous pair
    # In a gap, the earliest candidate is still before the transition: its offset is "before".
    before = candidates[0].astimezone(zone).utcoffset()
    assert before is not None
    return (wall - before).replace(tzinfo=UTC)


@cache
def clock_changes(zone_name: str) -> list[tuple[datetime, timedelta]]:
    """Each change of the zone's offset in 2025-2030: the local wall time just before it and
    the jump (positive: a gap of missing times; negative: times that happen twice)."""
    zone, changes = ZoneInfo(zone_name), []
    instant = datetime(2025, 1, 1, tzinfo=UTC)
    while instant < datetime(2031, 1, 1, tzinfo=UTC):
        before = instant.astimezone(zone).utcoffset()
        after = (instant + timedelta(hours=6)).astimezone(zone).utcoffset()
        if before != after and before is not None and after is not None:
            minutes = (instant + timedelta(minutes=m) for m in range(1, 361))
            change = next(m for m in minutes if m.astimezone(zone).utcoffset() == after)
            changes.append(((change + before).replace(tzinfo=None), after - before))
        instant += timedelta(hours=6)
    return changes


@st.composite
def programs(draw: st.DrawFn) -> tuple[Drawn, Schedule, str | None, date | None]:
    zone = draw(st.sampled_from(ZONES))
    start = draw(st.dates(date(2025, 1, 1), date(2030, 12, 31)))
    at = time(draw(st.one_of(st.integers(0, 3), st.integers(0, 23))), draw(st.integers(0, 59)))
    dst_night = draw(st.booleans()) and bool(clock_changes(zone))
    if dst_night:  # start at a time that is missing, or happens twice, that night
        wall, jump = draw(st.sampled_from(clock_changes(zone)))
        minutes = draw(st.integers(0, abs(jump) // timedelta(minutes=1) - 1))
        moment = min(wall, wall + jump) + timedelta(minutes=minutes)
        at, start = moment.time(), moment.date()  # the rule's first date, unless BYDAY says no
    freq = draw(st.sampled_from(["DAILY", "WEEKLY", "MONTHLY"]))
    wds = draw(st.lists(st.integers(0, 6), unique=True, max_size=3))
    if dst_night and wds and start.weekday() not in wds:
        wds.append(start.weekday())
    ordinals = st.one_of(st.none(), st.sampled_from([1, 2, 3, 4, 5, -1, -2, -5]))
    byday = tuple((wd, draw(ordinals) if freq == "MONTHLY" else None) for wd in wds)
    ending = draw(st.sampled_from(["count", "until", "open"]))
    count = draw(st.integers(1, 30)) if ending == "count" else None
    until = start + timedelta(draw(st.integers(0, 730))) if ending == "until" else None
    horizon = start + timedelta(draw(st.integers(0, 400))) if ending == "open" else None
    rule = Drawn(freq, draw(st.integers(1, 3)), byday, count, until)
    near = [d for d in (start + timedelta(i) for i in range(120)) if allowed(rule, start, d)]
    exdates = draw(st.sets(st.sampled_from(near), max_size=6)) if near else set()
    region = draw(st.sampled_from([None, "CA-AB", "US-NY", "GB"]))
    duration, skip = draw(st.integers(15, 240)), draw(st.booleans())
    schedule = Schedule(zone, start, at, duration, rule.text(), frozenset(exdates), skip)
    return rule, schedule, region, horizon


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_expansion_matches_the_oracle(drawn: tuple[Drawn, Schedule, str | None, date | None]):
    rule, schedule, region, horizon = drawn
    occurrences = recurrence.expand(schedule, holiday_region=region, until=horizon)
    days = [o.local_date for o in occurrences]
    zone = ZoneInfo(schedule.timezone)
    assert days == oracle_dates(rule, schedule, region, horizon)  # allowed, none removed
    if rule.count is not None:
        assert len(occurrences) == rule.count  # make-ups deliver every session bought
    assert len(set(days)) == len(days)
    assert all(a.starts_at < b.starts_at for a, b in pairwise(occurrences))
    for o in occurrences:
        assert o.starts_at == oracle_start(o.local_date, schedule.start_time, zone)
        assert o.ends_at - o.starts_at == timedelta(minutes=schedule.duration_minutes)
        local = o.starts_at.astimezone(zone)
        assert local.date() == o.local_date
        shift = local.replace(tzinfo=None) - datetime.combine(o.local_date, schedule.start_time)
        if shift:  # start_time does not exist that day: moved on by exactly the gap's length
            after, before = local.utcoffset(), (local - timedelta(hours=6)).utcoffset()
            assert after is not None and before is not None
            assert shift == after - before


@settings(max_examples=60, deadline=None)
@given(programs(), st.dates(date(2025, 1, 1), date(2032, 12, 31)))
def test_windows_cut_the_same_series(drawn, cut: date):
    _, schedule, region, horizon = drawn
    whole = recurrence.expand(schedule, holiday_region=region, until=horizon)
    after = recurrence.expand(schedule, holiday_region=region, until=horizon, after=cut)
    assert after == [o for o in whole if o.local_date >= cut]
    if horizon is None:
        capped = recurrence.expand(schedule, holiday_region=region, until=cut)
        assert capped == [o for o in whole if o.local_date <= cut]
