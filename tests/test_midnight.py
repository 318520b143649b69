"""Days end at midnight: a weekly window may end at 24:00, windows that meet (Monday 22:00-24:00
and Tuesday 00:00-02:00) are one stretch, so a session across local midnight can be staffed;
and on the days the clocks change, windows and sessions last the real time their wall-clock
times say, read by the one convention (a missing time with the offset before the gap, an
ambiguous one the first time it occurs).

Dates come from today and from the zone rules (the next clock changes, or for a zone that no
longer changes its clocks, the last ones), never from a fixed year."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from service.core import migrate
from tests.programs_support import confirmed_program, make_program, sessions_of
from tests.support import Api, invalid_fields, ok, problem

EDMONTON = "America/Edmonton"
BERLIN = "Europe/Berlin"
DAY = timedelta(days=1)
WEEK = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")


# --- dates and instants from the zone rules ------------------------------------------------


def today() -> date:
    return datetime.now(UTC).date()


def _noon_offset(day: date, zone: ZoneInfo) -> timedelta:
    offset = datetime.combine(day, time(12), zone).utcoffset()
    assert offset is not None
    return offset


def _first_changes(days: Iterable[date], zone: ZoneInfo) -> tuple[date | None, date | None]:
    spring = fall = None
    for day in days:
        before, after = _noon_offset(day - DAY, zone), _noon_offset(day, zone)
        if after > before and spring is None:
            spring = day
        if after < before and fall is None:
            fall = day
    return spring, fall


def clock_changes(zone_name: str) -> tuple[date, date]:
    """(the day the clocks spring forward, the day they fall back): the next ones from a week
    on (so sessions can be moved to them), or, for a zone that no longer changes its clocks
    (Alberta since November 2026, by tzdata), the last ones."""
    zone = ZoneInfo(zone_name)
    spring, fall = _first_changes((today() + timedelta(days=7 + n) for n in range(800)), zone)
    if spring is None or fall is None:
        spring, fall = _first_changes((today() - timedelta(days=n) for n in range(1, 800)), zone)
    assert spring is not None and fall is not None
    return spring, fall


def ambiguous_hour(day: date, zone_name: str) -> int:
    """The wall-clock hour that happens twice on a fall-back day."""
    zone = ZoneInfo(zone_name)
    [hour] = [
        h
        for h in range(24)
        if datetime.combine(day, time(h, 30), zone).utcoffset()
        != datetime.combine(day, time(h, 30, fold=1), zone).utcoffset()
    ]
    return hour


def missing_hour(day: date, zone_name: str) -> int:
    """The wall-clock hour that does not happen on a spring-forward day."""
    zone = ZoneInfo(zone_name)
    [hour] = [
        h
        for h in range(24)
        if datetime.combine(day, time(h, 30), zone).astimezone(UTC).astimezone(zone).hour != h
    ]
    return hour


def instant(day: date, clock: str, zone_name: str, *, fold: int = 0) -> str:
    """Wall-clock `clock` on `day` in the zone (fold 1: an ambiguous time's second occurrence)
    as the API writes instants."""
    wall = datetime.combine(day, time.fromisoformat(clock), ZoneInfo(zone_name)).replace(fold=fold)
    return wall.astimezone(UTC).isoformat().replace("+00:00", "Z")


def next_weekday(weekday: int, *, after: date) -> date:
    """The first date after `after` on `weekday` (0 Monday .. 6 Sunday)."""
    day = after + DAY
    while day.weekday() != weekday:
        day += DAY
    return day


# --- API helpers ---------------------------------------------------------------------------


def window(weekday: str, start: str, end: str) -> dict[str, str]:
    return {"weekday": weekday, "start": start, "end": end}


ROUND_THE_CLOCK = [window(day, "00:00", "24:00") for day in WEEK]


async def one_session_program(
    api: Api, zone: str, day: date, start_time: str, minutes: int
) -> dict[str, Any]:
    """A requested program of one session at `start_time` on `day`, in `zone`."""
    org = await api.make_org(timezone=zone, holiday_region=None)
    offering = await api.make_offering(duration_minutes=minutes)
    return await make_program(
        api,
        org,
        offering,
        schedule={
            "start_date": str(day),
            "start_time": start_time,
            "rrule": "FREQ=DAILY;COUNT=1",
            "duration_minutes": minutes,
        },
    )


async def assign(api: Api, program: dict[str, Any], therapist: dict[str, Any]) -> Any:
    return await api.client.post(
        f"/v1/programs/{program['id']}/assign",
        headers=api.admin,
        json={"therapist_id": therapist["id"]},
    )


async def confirm(api: Api, program: dict[str, Any]) -> dict[str, Any]:
    confirmed: dict[str, Any] = ok(
        await api.client.post(f"/v1/programs/{program['id']}/confirm", headers=api.admin)
    )
    return confirmed


def conflicts(response: Any) -> list[tuple[str, str]]:
    return [(c["reason"], c["detail"]) for c in problem(response, 409)["conflicts"]]


def outside(weekday: str, start: str, end: str, zone: str) -> tuple[str, str]:
    return (
        "outside_availability",
        f"{weekday} {start}-{end} ({zone}) is outside their weekly availability",
    )


async def available_minutes(api: Api, therapist: dict[str, Any], first: date, last: date) -> int:
    report = ok(
        await api.client.get(
            "/v1/reports/utilization",
            params={"from": str(first), "to": str(last)},
            headers=api.admin,
        )
    )
    [row] = [r for r in report["data"] if r["therapist_id"] == therapist["id"]]
    minutes: int = row["available_minutes"]
    return minutes


# --- 24:00 in the API ----------------------------------------------------------------------


async def test_a_window_may_end_at_24_00_and_reads_back_as_written(api: Api):
    windows = [window("MO", "22:00", "24:00"), window("TU", "00:00", "02:00")]
    therapist = await api.make_therapist(availability=windows)

    path = f"/v1/therapists/{therapist['id']}/availability"
    assert ok(await api.client.get(path, headers=api.admin))["data"] == windows
    # What was read back can be written again unchanged.
    assert ok(await api.client.put(path, json=windows, headers=api.admin))["data"] == windows


async def test_24_00_only_ends_a_window_and_nothing_later_is_a_time(api: Api):
    therapist = await api.make_therapist()

    response = await api.client.put(
        f"/v1/therapists/{therapist['id']}/availability",
        json=[
            window("MO", "24:00", "24:00"),
            window("TU", "22:00", "24:01"),
            window("WE", "22:00", "00:00"),
        ],
        headers=api.admin,
    )

    body = problem(response, 422)
    assert [(e["field"], e["message"]) for e in body["errors"]] == [
        ("0.start", "must be a time of day as HH:MM, 00:00 to 23:59"),
        ("1.end", "must be a time of day as HH:MM, 00:00 to 24:00"),
        ("2.end", "end must be after start"),
    ]


async def test_a_window_to_24_00_still_may_not_overlap_another(api: Api):
    therapist = await api.make_therapist()

    response = await api.client.put(
        f"/v1/therapists/{therapist['id']}/availability",
        json=[window("FR", "18:00", "24:00"), window("FR", "23:00", "23:30")],
        headers=api.admin,
    )

    assert invalid_fields(response) == ["1.start"]
    assert problem(response, 422)["errors"][0]["message"] == "overlaps the window FR 18:00-24:00"


# --- across midnight (Edmonton this winter: Python's tzdata and PostgreSQL 15 differ by an
# hour here, and availability is judged by Python's rules alone) --------------------------


async def test_windows_that_meet_at_midnight_cover_a_session_across_it(api: Api):
    monday = next_weekday(0, after=today() + timedelta(days=7))
    program = await one_session_program(api, EDMONTON, monday, "23:00", 120)
    meeting = await api.make_therapist(
        availability=[window("MO", "22:00", "24:00"), window("TU", "00:00", "02:00")]
    )
    ending_at_midnight = await api.make_therapist(availability=[window("MO", "22:00", "24:00")])
    gap_after_midnight = await api.make_therapist(
        availability=[window("MO", "22:00", "24:00"), window("TU", "00:01", "02:00")]
    )

    assert conflicts(await assign(api, program, ending_at_midnight)) == [
        outside("Mon", "23:00", "01:00", EDMONTON)
    ]
    assert conflicts(await assign(api, program, gap_after_midnight)) == [
        outside("Mon", "23:00", "01:00", EDMONTON)
    ]
    ok(await assign(api, program, meeting))
    assert (await confirm(api, program))["status"] == "confirmed"
    [session] = await sessions_of(api, program["id"])
    assert (session["therapist_id"], session["starts_at"], session["ends_at"]) == (
        meeting["id"],
        instant(monday, "23:00", EDMONTON),
        instant(monday + DAY, "01:00", EDMONTON),
    )
    # A window to 24:00 is two full hours of the utilization report.
    assert await available_minutes(api, ending_at_midnight, monday, monday) == 120
    assert await available_minutes(api, meeting, monday, monday + DAY) == 240


async def test_a_window_from_midnight_is_read_by_pythons_rules_not_the_servers(api: Api):
    """Alberta is on UTC-6 all winter by tzdata; PostgreSQL 15's older rules say UTC-7, which
    would put Monday 00:00-01:00 at Sunday 23:00-24:00. Availability is judged by Python's
    rules only (service.core.clock), so the Monday window covers it."""
    monday = next_weekday(0, after=today() + timedelta(days=7))
    while monday.month not in (11, 12, 1, 2):
        monday += timedelta(days=7)
    starts = datetime.combine(monday, time(0), ZoneInfo(EDMONTON))
    assert starts.utcoffset() == timedelta(hours=-6)
    program = await one_session_program(api, EDMONTON, monday, "00:00", 60)
    sunday_late = await api.make_therapist(availability=[window("SU", "23:00", "24:00")])
    monday_early = await api.make_therapist(availability=[window("MO", "00:00", "01:00")])

    assert conflicts(await assign(api, program, sunday_late)) == [
        outside("Mon", "00:00", "01:00", EDMONTON)
    ]
    ok(await assign(api, program, monday_early))
    await confirm(api, program)
    [session] = await sessions_of(api, program["id"])
    assert session["starts_at"] == starts.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def test_windows_that_meet_on_one_day_are_one_stretch(api: Api):
    tuesday = next_weekday(1, after=today() + timedelta(days=7))
    program = await one_session_program(api, EDMONTON, tuesday, "11:00", 120)
    therapist = await api.make_therapist(
        availability=[window("TU", "09:00", "12:00"), window("TU", "12:00", "15:00")]
    )

    ok(await assign(api, program, therapist))


async def test_a_session_is_rescheduled_across_midnight_only_into_availability(api: Api):
    monday = next_weekday(0, after=today() + timedelta(days=7))
    org = await api.make_org(timezone=EDMONTON, holiday_region=None)
    offering = await api.make_offering(duration_minutes=90)
    therapist = await api.make_therapist(
        availability=[
            window("MO", "10:00", "11:30"),
            window("MO", "23:00", "24:00"),
            window("TU", "00:00", "00:30"),
            window("TU", "23:00", "24:00"),
        ]
    )
    program = await confirmed_program(
        api,
        org,
        offering,
        therapist,
        schedule={"start_date": str(monday), "start_time": "10:00", "rrule": "FREQ=DAILY;COUNT=1"},
    )
    [session] = await sessions_of(api, program["id"])
    path = f"/v1/sessions/{session['id']}"

    # Tuesday 23:00-00:30 runs into a Wednesday with no window.
    refused = await api.client.patch(
        path, json={"starts_at": instant(monday + DAY, "23:00", EDMONTON)}, headers=api.admin
    )
    assert conflicts(refused) == [outside("Tue", "23:00", "00:30", EDMONTON)]
    assert problem(refused, 409)["conflicts"][0]["session_id"] == session["id"]

    moved = ok(
        await api.client.patch(
            path, json={"starts_at": instant(monday, "23:00", EDMONTON)}, headers=api.admin
        )
    )
    assert (moved["starts_at"], moved["ends_at"], moved["rescheduled"]) == (
        instant(monday, "23:00", EDMONTON),
        instant(monday + DAY, "00:30", EDMONTON),
        True,
    )


async def test_a_session_across_midnight_is_handed_over_only_to_a_therapist_free_on_both_days(
    api: Api,
):
    friday = next_weekday(4, after=today() + timedelta(days=7))
    org = await api.make_org(timezone=EDMONTON, holiday_region=None)
    offering = await api.make_offering(duration_minutes=60)
    first = await api.make_therapist(availability=ROUND_THE_CLOCK)
    program = await confirmed_program(
        api,
        org,
        offering,
        first,
        schedule={"start_date": str(friday), "start_time": "23:30", "rrule": "FREQ=DAILY;COUNT=1"},
    )
    [session] = await sessions_of(api, program["id"])
    friday_only = await api.make_therapist(availability=[window("FR", "20:00", "24:00")])
    both_days = await api.make_therapist(
        availability=[window("FR", "20:00", "24:00"), window("SA", "00:00", "08:00")]
    )
    path = f"/v1/sessions/{session['id']}/substitute"

    refused = await api.client.post(
        path, json={"therapist_id": friday_only["id"]}, headers=api.admin
    )
    assert conflicts(refused) == [outside("Fri", "23:30", "00:30", EDMONTON)]

    handed = ok(
        await api.client.post(path, json={"therapist_id": both_days["id"]}, headers=api.admin)
    )
    assert handed["therapist_id"] == both_days["id"]


async def test_a_session_across_sunday_midnight_counts_in_the_week_it_starts(api: Api):
    sunday = next_weekday(6, after=today() + timedelta(days=7))
    week = sunday - timedelta(days=6)
    therapist = await api.make_therapist(max_weekly_minutes=120, availability=ROUND_THE_CLOCK)
    late = await one_session_program(api, EDMONTON, sunday, "23:00", 120)
    ok(await assign(api, late, therapist))
    await confirm(api, late)

    # The Saturday before is in the same week: 120 + 15 minutes.
    saturday = await one_session_program(api, EDMONTON, sunday - DAY, "10:00", 15)
    refused = problem(await assign(api, saturday, therapist), 409)["conflicts"]
    assert [(c["reason"], c["week_start"], c["week_minutes"]) for c in refused] == [
        ("weekly_load", str(week), 135)
    ]
    # The Monday after starts a new week, though the late session ended on it.
    monday = await one_session_program(api, EDMONTON, sunday + DAY, "10:00", 120)
    ok(await assign(api, monday, therapist))


# --- the days the clocks change --------------------------------------------------------------


@pytest.mark.parametrize("zone", [EDMONTON, BERLIN])
async def test_a_window_on_the_spring_forward_day_lasts_the_real_time_it_spans(api: Api, zone: str):
    spring, _ = clock_changes(zone)
    assert (spring.weekday(), missing_hour(spring, zone)) == (6, 2)  # Sunday, 02:00 -> 03:00
    therapist = await api.make_therapist(
        timezone=zone, availability=[window("SU", "01:00", "04:00")]
    )

    # 01:00-04:00 is two real hours: a 120-minute session fills it, 135 minutes do not fit.
    fits = await one_session_program(api, zone, spring, "01:00", 120)
    ok(await assign(api, fits, therapist))
    await confirm(api, fits)
    [session] = await sessions_of(api, fits["id"])
    assert (session["starts_at"], session["ends_at"]) == (
        instant(spring, "01:00", zone),
        instant(spring, "04:00", zone),
    )
    too_long = await one_session_program(api, zone, spring, "01:00", 135)
    other = await api.make_therapist(timezone=zone, availability=[window("SU", "01:00", "04:00")])
    assert conflicts(await assign(api, too_long, other)) == [outside("Sun", "01:00", "04:15", zone)]
    # 02:30 does not exist: it is read with the offset before the gap, i.e. 03:30 new time.
    in_the_gap = await one_session_program(api, zone, spring, "02:30", 30)
    late_riser = await api.make_therapist(
        timezone=zone, availability=[window("SU", "03:30", "04:00")]
    )
    ok(await assign(api, in_the_gap, late_riser))
    await confirm(api, in_the_gap)
    [session] = await sessions_of(api, in_the_gap["id"])
    assert (session["starts_at"], session["ends_at"]) == (
        instant(spring, "03:30", zone),
        instant(spring, "04:00", zone),
    )

    assert await available_minutes(api, therapist, spring, spring) == 120


@pytest.mark.parametrize("zone", [EDMONTON, BERLIN])
async def test_a_session_in_the_repeated_hour_of_the_fall_back_day(api: Api, zone: str):
    _, fall = clock_changes(zone)
    assert fall.weekday() == 6
    hour = ambiguous_hour(
        fall, zone
    )  # 01:00-02:00 happens twice in Edmonton, 02:00-03:00 in Berlin
    starts, ends = f"{hour:02d}:30", f"{hour + 1:02d}:30"
    # From the first hh:30 to the following (hh+1):30 is two real hours.
    program = await one_session_program(api, zone, fall, starts, 120)
    window_to_end = await api.make_therapist(
        timezone=zone, availability=[window("SU", f"{hour:02d}:00", ends)]
    )
    window_to_hour = await api.make_therapist(
        timezone=zone, availability=[window("SU", f"{hour:02d}:00", f"{hour + 1:02d}:00")]
    )
    light = await api.make_therapist(timezone=zone, max_weekly_minutes=119)

    assert conflicts(await assign(api, program, window_to_hour)) == [
        outside("Sun", starts, ends, zone)
    ]
    refused = problem(await assign(api, program, light), 409)["conflicts"]
    assert [(c["reason"], c["week_start"], c["week_minutes"]) for c in refused] == [
        ("weekly_load", str(fall - timedelta(days=6)), 120)
    ]
    ok(await assign(api, program, window_to_end))
    await confirm(api, program)
    [session] = await sessions_of(api, program["id"])
    assert (session["starts_at"], session["ends_at"]) == (
        instant(fall, starts, zone),
        instant(fall, ends, zone, fold=1),
    )
    # hh:00 to hh+1:00 on that day is two real hours, hh:00 to hh+1:30 two and a half.
    assert await available_minutes(api, window_to_hour, fall, fall) == 120
    assert await available_minutes(api, window_to_end, fall, fall) == 150


@pytest.mark.parametrize("zone", [EDMONTON, BERLIN])
@pytest.mark.parametrize("change", ["spring", "fall"])
async def test_sessions_across_midnight_into_and_out_of_a_clock_change_day(
    api: Api, zone: str, change: str
):
    spring, fall = clock_changes(zone)
    sunday = spring if change == "spring" else fall
    saturday, monday = sunday - DAY, sunday + DAY
    therapist = await api.make_therapist(
        timezone=zone,
        availability=[
            window("SA", "23:00", "24:00"),
            window("SU", "00:00", "01:00"),
            window("SU", "23:00", "24:00"),
            window("MO", "00:00", "01:00"),
        ],
    )
    into = await one_session_program(api, zone, saturday, "23:00", 120)
    out_of = await one_session_program(api, zone, sunday, "23:00", 120)
    # The windows end at 01:00: Saturday 23:00 for 150 minutes runs to 01:30.
    too_long = await one_session_program(api, zone, saturday, "23:00", 150)

    ok(await assign(api, into, therapist))
    ok(await assign(api, out_of, therapist))
    assert conflicts(await assign(api, too_long, therapist)) == [
        outside("Sat", "23:00", "01:30", zone)
    ]
    for program, day in ((into, saturday), (out_of, sunday)):
        await confirm(api, program)
        [session] = await sessions_of(api, program["id"])
        assert (session["starts_at"], session["ends_at"]) == (
            instant(day, "23:00", zone),
            instant(day + DAY, "01:00", zone),
        )
    # Each of the four windows of those days is one real hour.
    assert await available_minutes(api, therapist, saturday, monday) == 4 * 60


# --- the migration -------------------------------------------------------------------------

BEFORE_MINUTES = "02746717bd71"  # the revision before windows were kept as minutes of the day


def test_stored_windows_become_minutes_of_the_day_and_24_00_goes_back_to_time(
    scratch_database: Callable[[str], str],
) -> None:
    url = scratch_database("ensemble_midnight_migration")
    migrate.upgrade(url, BEFORE_MINUTES)
    therapist_id = uuid.uuid4()
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO therapists (id, name, email, credentials, specialties, languages, "
            "timezone, max_weekly_minutes, active) VALUES "
            "(%s, 'T', 't@ensemble.example', '{}', '{}', '{en}', 'Europe/Berlin', 600, true)",
            (therapist_id,),
        )
        conn.execute(
            "INSERT INTO therapist_availability (id, therapist_id, weekday, start_time, end_time) "
            "VALUES (%s, %s, 'MO', '00:00', '09:15'), (%s, %s, 'TU', '17:30', '23:59')",
            (uuid.uuid4(), therapist_id, uuid.uuid4(), therapist_id),
        )

    migrate.upgrade(url)

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT weekday, start_minute, end_minute FROM therapist_availability ORDER BY weekday"
        ).fetchall()
        assert rows == [("MO", 0, 555), ("TU", 1050, 1439)]
        conn.execute(
            "INSERT INTO therapist_availability (id, therapist_id, weekday, start_minute, "
            "end_minute) VALUES (%s, %s, 'WE', 1320, 1440)",
            (uuid.uuid4(), therapist_id),
        )
        conn.commit()
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO therapist_availability (id, therapist_id, weekday, start_minute, "
                "end_minute) VALUES (%s, %s, 'TH', 1320, 1441)",
                (uuid.uuid4(), therapist_id),
            )

    migrate.downgrade(url, BEFORE_MINUTES)

    with psycopg.connect(url) as conn:
        back = conn.execute(
            "SELECT weekday, start_time::text, end_time::text FROM therapist_availability "
            "ORDER BY weekday"
        ).fetchall()
    assert back == [
        ("MO", "00:00:00", "09:15:00"),
        ("TU", "17:30:00", "23:59:00"),
        ("WE", "22:00:00", "24:00:00"),
    ]
