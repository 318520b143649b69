"""The booking preview (the portal's Preview): the dates booking would plan, the dates the rule
names that are left out, and the made-up dates marked. Pure (`scheduling.plan.preview`)."""

from __future__ import annotations

from datetime import date, time, timedelta

from hypothesis import given
from hypothesis import strategies as st

from service.core.clock import local_today
from service.scheduling.plan import preview
from service.scheduling.recurrence import Schedule

ZONE = "America/Edmonton"


def next_monday(after: date) -> date:
    return after + timedelta(days=7 - after.weekday())


def schedule(start: date, rrule: str, **extra: object) -> Schedule:
    return Schedule(
        timezone=ZONE,
        start_date=start,
        start_time=time(10, 30),
        duration_minutes=45,
        rrule=rrule,
        **extra,  # type: ignore[arg-type]
    )


def test_a_term_break_is_skipped_and_made_up_after_the_last_date():
    monday = next_monday(local_today(ZONE))
    shown = preview(
        schedule(
            monday, "FREQ=WEEKLY;BYDAY=MO;COUNT=4", exdates=frozenset({monday + timedelta(7)})
        ),
        holiday_region=None,
        until=None,
    )
    assert [(o.local_date, made_up) for o, made_up in shown.sessions] == [
        (monday, False),
        (monday + timedelta(14), False),
        (monday + timedelta(21), False),
        (monday + timedelta(28), True),
    ]
    assert shown.skipped == [(monday + timedelta(7), "excluded date")]


def test_a_holiday_is_skipped_when_the_schedule_skips_holidays():
    year = next(y for y in range(local_today(ZONE).year + 1, 2100) if date(y, 7, 4).weekday() == 2)
    start = date(year, 7, 3)  # a Tuesday; Independence Day is the Wednesday
    shown = preview(
        schedule(start, "FREQ=DAILY;COUNT=3", skip_holidays=True),
        holiday_region="US-NY",
        until=None,
    )
    assert [(o.local_date, m) for o, m in shown.sessions] == [
        (date(year, 7, 3), False),
        (date(year, 7, 5), False),
        (date(year, 7, 6), True),
    ]
    assert shown.skipped == [(date(year, 7, 4), "holiday")]


def test_an_until_rule_makes_nothing_up():
    monday = next_monday(local_today(ZONE))
    until = (monday + timedelta(14)).strftime("%Y%m%d")
    shown = preview(
        schedule(monday, f"FREQ=WEEKLY;BYDAY=MO;UNTIL={until}", exdates=frozenset({monday})),
        holiday_region=None,
        until=None,
    )
    assert [(o.local_date, m) for o, m in shown.sessions] == [
        (monday + timedelta(7), False),
        (monday + timedelta(14), False),
    ]
    assert shown.skipped == [(monday, "excluded date")]


@given(
    count=st.integers(min_value=1, max_value=30),
    removed=st.sets(st.integers(min_value=0, max_value=60), max_size=10),
    days=st.sets(st.sampled_from(["MO", "TU", "WE", "TH", "FR"]), min_size=1),
)
def test_a_count_rule_keeps_its_count_and_makes_up_one_date_per_date_skipped(
    count: int, removed: set[int], days: set[str]
):
    start = next_monday(local_today(ZONE))
    rule = f"FREQ=WEEKLY;BYDAY={','.join(sorted(days))};COUNT={count}"
    exdates = frozenset(start + timedelta(n) for n in removed)
    shown = preview(schedule(start, rule, exdates=exdates), holiday_region=None, until=None)
    booked = [o.local_date for o, _ in shown.sessions]
    assert len(booked) == count
    assert not exdates & set(booked)
    assert sum(made_up for _, made_up in shown.sessions) == len(shown.skipped)
    assert all(d in exdates for d, _ in shown.skipped)
