"""A series is a series, an exception stays an exception: a hypothesis state machine.

Random programs (weekly, bi-weekly or monthly; COUNT or UNTIL; with term breaks as exdates and
with or without statutory holidays) take random single edits (reschedule, cancel, late-cancel,
make-up, complete, no-show) and series edits from random dates (time, weekday, duration,
therapist, end date or count, a new term break), all through the API. After every step the
sessions equal an independent model of the contract written here (its own calendar arithmetic:
nothing of service.scheduling is called), no therapist is double-booked, and an invoice run
bills exactly the delivered and fee-bearing sessions, at the right amounts.

The machine runs in a worker thread (hypothesis drives it synchronously); each API call is sent
to the test's event loop, inside the test's transaction like every other test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Coroutine, Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, ClassVar, TypeVar
from zoneinfo import ZoneInfo

import holidays
import httpx
import hypothesis
from hypothesis import HealthCheck
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.settings import Settings
from service.programs import materialize
from tests.support import Api, Headers, ok

ZONE = ZoneInfo("America/Edmonton")
REGION = ("CA", "AB")
RATE, FEE_PERCENT, NOTICE_HOURS = 10000, 50, 48
WEEKDAYS = ("MO", "TU", "WE", "TH", "FR")
LIVE = {"scheduled", "completed", "no_show"}
BILLABLE = {"completed", "no_show", "late_cancelled"}
T = TypeVar("T")

# --- the model's own calendar ------------------------------------------------------------------


def today() -> date:
    return datetime.now(UTC).astimezone(ZONE).date()


def at(day: date, clock: time) -> datetime:
    return datetime.combine(day, clock, ZONE).astimezone(UTC)


def text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


@dataclasses.dataclass(frozen=True)
class Plan:
    """A program's schedule as the model reads it."""

    kind: str  # weekly (interval 1 or 2) or monthly (the n-th weekday)
    interval: int
    weekday: int
    nth: int
    start: date
    clock: time
    minutes: int
    count: int | None
    until: date | None
    exdates: frozenset[date]
    skip_holidays: bool

    def rrule(self) -> str:
        if self.kind == "monthly":
            rule = f"FREQ=MONTHLY;BYDAY={self.nth}{WEEKDAYS[self.weekday]}"
        else:
            rule = f"FREQ=WEEKLY;INTERVAL={self.interval};BYDAY={WEEKDAYS[self.weekday]}"
        if self.count is not None:
            return f"{rule};COUNT={self.count}"
        if self.until is not None:
            return f"{rule};UNTIL={self.until:%Y%m%d}"
        return rule

    def schedule(self) -> dict[str, Any]:
        return {
            "timezone": "America/Edmonton",
            "start_date": self.start.isoformat(),
            "start_time": self.clock.strftime("%H:%M"),
            "duration_minutes": self.minutes,
            "rrule": self.rrule(),
            "exdates": sorted(d.isoformat() for d in self.exdates),
            "skip_holidays": self.skip_holidays,
        }

    def rule_days(self) -> Iterator[date]:
        """Days the rule allows from its start, in order, before any removal (unbounded)."""
        if self.kind == "monthly":
            year, month = self.start.year, self.start.month
            while True:
                day = nth_weekday(year, month, self.weekday, self.nth)
                if day >= self.start:
                    yield day
                year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        monday = self.start - timedelta(days=self.start.weekday())
        day = monday + timedelta(days=self.weekday)
        while True:
            if ((day - monday).days // 7) % self.interval == 0 and day >= self.start:
                yield day
            day += timedelta(days=7)

    def removed(self, day: date) -> bool:
        if day in self.exdates:
            return True
        country, subdivision = REGION
        return self.skip_holidays and day in holidays.country_holidays(
            country, subdiv=subdivision, years=day.year
        )

    @property
    def open_ended(self) -> bool:
        return self.count is None and self.until is None

    def days_from(self, first: date, wanted: int | None, cap: date | None = None) -> list[date]:
        """The sessions' days on or after `first`: `wanted` of them, or up to UNTIL, or (an
        open-ended rule) up to `cap`."""
        assert not self.open_ended or cap is not None
        found: list[date] = []
        for day in self.rule_days():
            if self.until is not None and day > self.until:
                break
            if cap is not None and day > cap:
                break
            if wanted is not None and len(found) == wanted:
                break
            if day >= first and not self.removed(day):
                found.append(day)
        return found


@dataclasses.dataclass
class Row:
    """One session as the model expects it. `depth` is 0 for a planned session and n + 1 for
    the make-up of a depth-n one: (occurrence, depth) names a row."""

    occurrence: int
    depth: int
    starts_at: datetime
    ends_at: datetime
    original: datetime
    therapist: str
    status: str = "scheduled"
    rescheduled: bool = False
    made_up: bool = False
    id: str | None = None

    @property
    def key(self) -> tuple[int, int]:
        return (self.occurrence, self.depth)

    @property
    def live(self) -> bool:
        return self.status in LIVE


def planned_row(plan: Plan, occurrence: int, day: date, therapist: str) -> Row:
    starts = at(day, plan.clock)
    return Row(occurrence, 0, starts, starts + timedelta(minutes=plan.minutes), starts, therapist)


def overlaps(rows: list[Row]) -> bool:
    by_therapist: dict[str, list[Row]] = {}
    for row in rows:
        if row.live:
            by_therapist.setdefault(row.therapist, []).append(row)
    for booked in by_therapist.values():
        booked.sort(key=lambda r: r.starts_at)
        if any(a.ends_at > b.starts_at for a, b in itertools.pairwise(booked)):
            return True
    return False


class Refused(Exception):
    """The model's prediction that the service refuses a change (with this status)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def replanned(
    rows: list[Row], new: Plan, effective: date, therapist: str, horizon_weeks: int
) -> tuple[list[Row], int]:
    """The contract after a schedule change from `effective`: the occurrences planned before it
    keep their numbers, the new schedule's days from `effective` on are the next occurrences;
    rows handled by hand (moved, cancelled, made up, delivered) stand for their occurrence;
    a scheduled row beyond a shorter contract goes. An open-ended series is planned up to the
    horizon from `effective`. Answers the rows and how many occurrences precede `effective`."""
    if new.until is not None and new.until < new.start:
        raise Refused(422)  # UNTIL before start_date
    if not new.open_ended and not new.days_from(new.start, new.count):
        raise Refused(422)  # no session remains
    cut = at(effective, time())
    before = max(
        (r.occurrence for r in rows if r.depth == 0 and r.original < cut),
        default=0,
    )
    plain = {
        id(r)
        for r in rows
        if r.depth == 0
        and r.status == "scheduled"
        and not r.rescheduled
        and r.starts_at >= cut
        and r.occurrence > before
    }
    kept = [r for r in rows if id(r) not in plain]
    if new.count is not None and new.count < before:
        raise Refused(422)
    days = new.days_from(
        effective,
        None if new.count is None else new.count - before,
        cap=effective + timedelta(weeks=horizon_weeks) if new.open_ended else None,
    )
    last = new.count if new.count is not None else before + len(days)
    if new.open_ended:
        last = 10**6
    beyond = [r for r in kept if r.occurrence > last]
    if any(r.status in ("completed", "no_show") for r in beyond):
        raise Refused(422)
    gone = {id(r) for r in beyond if r.status == "scheduled"}
    kept = [dataclasses.replace(r) for r in kept if id(r) not in gone]
    for row in kept:
        if row.made_up and not any(
            k.occurrence == row.occurrence and k.depth == row.depth + 1 for k in kept
        ):
            row.made_up = False
    taken = {r.occurrence for r in kept if r.depth == 0}
    fresh = [
        planned_row(new, before + n, day, therapist)
        for n, day in enumerate(days, start=1)
        if before + n not in taken
    ]
    if overlaps(kept + fresh):
        raise Refused(409)
    return kept + fresh, before


def extended(
    rows: list[Row], plan: Plan, series: tuple[date, int], until: date, first: date, therapist: str
) -> list[Row]:
    """The horizon job run on `first`: the series' occurrences from `first` to `until` that are
    not there yet (whatever became of them) are added, except where the therapist is booked."""
    start, offset = series
    there = {r.occurrence for r in rows if r.depth == 0}
    added: list[Row] = []
    for n, day in enumerate(plan.days_from(start, None, cap=until), start=offset + 1):
        if day < first or n in there:
            continue
        row = planned_row(plan, n, day, therapist)
        if not overlaps([*rows, row]):
            added.append(row)
    return rows + added


# --- the machine -------------------------------------------------------------------------------

plans: st.SearchStrategy[dict[str, Any]] = st.builds(
    dict,
    kind=st.sampled_from(["weekly", "biweekly", "monthly"]),
    weekday=st.integers(0, 4),
    nth=st.integers(1, 4),
    start_offset=st.integers(-35, 10),
    hour=st.integers(8, 14),
    minutes=st.sampled_from([30, 45, 60, 90]),
    count=st.one_of(st.none(), st.integers(3, 9)),
    open_ended=st.booleans(),
    span_weeks=st.integers(4, 16),
    term_break=st.one_of(st.none(), st.tuples(st.integers(0, 60), st.integers(7, 14))),
    skip_holidays=st.booleans(),
)


class SeriesMachine(RuleBasedStateMachine):
    api: ClassVar[Api]
    db: ClassVar[AsyncSession]
    horizon_weeks: ClassVar[int]
    loop: ClassVar[asyncio.AbstractEventLoop]

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[Row] = []
        self.plan: Plan | None = None

    # Calls into the app, on the test's event loop.
    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def send(self, method: str, url: str, headers: Headers | None = None, **kw: Any) -> Any:
        response: httpx.Response = self.run(
            self.api.client.request(method, url, headers=headers or self.api.admin, **kw)
        )
        return response

    @initialize(spec=plans)
    def book(self, spec: dict[str, Any]) -> None:
        self.org = self.run(self.api.make_org())
        self.offering = self.run(
            self.api.make_offering(
                rate_cents=RATE,
                late_cancel_fee_percent=FEE_PERCENT,
                cancellation_notice_hours=NOTICE_HOURS,
            )
        )
        self.therapists = [self.run(self.api.make_therapist())["id"] for _ in range(2)]
        self.coordinator = self.run(self.api.coordinator(self.org["id"]))
        start = today() + timedelta(days=spec["start_offset"])
        breaks: frozenset[date] = frozenset()
        if spec["term_break"] is not None:
            first, length = spec["term_break"]
            breaks = frozenset(start + timedelta(days=first + d) for d in range(length))
        self.plan = Plan(
            kind="monthly" if spec["kind"] == "monthly" else "weekly",
            interval=2 if spec["kind"] == "biweekly" else 1,
            weekday=spec["weekday"],
            nth=spec["nth"],
            start=start,
            clock=time(spec["hour"]),
            minutes=spec["minutes"],
            count=spec["count"],
            until=None
            if spec["count"] is not None or spec["open_ended"]
            else start
            + timedelta(weeks=spec["span_weeks"] * (3 if spec["kind"] == "monthly" else 1)),
            exdates=breaks,
            skip_holidays=spec["skip_holidays"],
        )
        self.therapist = self.therapists[0]
        body = {
            "organization_id": self.org["id"],
            "offering_id": self.offering["id"],
            "title": "Series",
            "modality": "online",
            "video_url": "https://meet.example.org/series",
            "participants": 1,
            "schedule": self.plan.schedule(),
        }
        self.program = ok(self.send("POST", "/v1/programs", json=body), 201)
        path = f"/v1/programs/{self.program['id']}"
        ok(self.send("POST", f"{path}/assign", json={"therapist_id": self.therapist}))
        ok(self.send("POST", f"{path}/confirm"))
        horizon = max(today(), start) + timedelta(weeks=self.horizon_weeks)
        days = self.plan.days_from(
            self.plan.start, self.plan.count, cap=horizon if self.plan.open_ended else None
        )
        self.series = (start, 0)
        self.rows = [
            planned_row(self.plan, n, day, self.therapist) for n, day in enumerate(days, start=1)
        ]

    # Single edits ---------------------------------------------------------------------------

    def pick(self, data: st.DataObject, rows: list[Row]) -> Row | None:
        return data.draw(st.sampled_from(rows)) if rows else None

    def future(self) -> list[Row]:
        soon = datetime.now(UTC) + timedelta(hours=NOTICE_HOURS + 24)
        return [r for r in self.rows if r.status == "scheduled" and r.starts_at > soon]

    def past(self) -> list[Row]:
        gone = datetime.now(UTC) - timedelta(minutes=5)
        return [r for r in self.rows if r.status == "scheduled" and r.starts_at < gone]

    def slot(self, data: st.DataObject) -> datetime:
        day = today() + timedelta(days=data.draw(st.integers(1, 70), label="days ahead"))
        return at(day, time(data.draw(st.integers(8, 16)), data.draw(st.sampled_from([0, 30]))))

    def attempt(self, response: Any, rows: list[Row] | Refused) -> Any:
        """Check the answer against the model's prediction; adopt the new rows if accepted."""
        if isinstance(rows, Refused):
            assert response.status_code == rows.status, response.text
            return None
        assert response.status_code in (200, 201), response.text
        self.rows = rows
        return response.json()

    @rule(data=st.data())
    def reschedule(self, data: st.DataObject) -> None:
        row = self.pick(data, self.future())
        if row is None:
            return
        starts = self.slot(data)
        moved = dataclasses.replace(
            row, starts_at=starts, ends_at=starts + (row.ends_at - row.starts_at), rescheduled=True
        )
        after = [moved if r is row else r for r in self.rows]
        response = self.send("PATCH", f"/v1/sessions/{row.id}", json={"starts_at": text(starts)})
        self.attempt(response, Refused(409) if overlaps(after) else after)

    @rule(data=st.data())
    def cancel_with_notice(self, data: st.DataObject) -> None:
        row = self.pick(data, [r for r in self.rows if r.status == "scheduled"])
        if row is None:
            return
        after = [dataclasses.replace(r, status="cancelled") if r is row else r for r in self.rows]
        body = {"cancelled_by": "provider", "reason": "Therapist away"}
        self.attempt(self.send("POST", f"/v1/sessions/{row.id}/cancel", json=body), after)

    @rule(data=st.data())
    def late_cancel(self, data: st.DataObject) -> None:
        """The organization cancels: late (and fee-bearing) for a session already past; with
        notice for one days away."""
        row = self.pick(data, self.past() + self.future())
        if row is None:
            return
        late = row.starts_at < datetime.now(UTC)
        status = "late_cancelled" if late else "cancelled"
        after = [dataclasses.replace(r, status=status) if r is row else r for r in self.rows]
        response = self.send("POST", f"/v1/sessions/{row.id}/cancel", self.coordinator)
        self.attempt(response, after)

    @rule(data=st.data())
    def make_up(self, data: st.DataObject) -> None:
        cancelled = [r for r in self.rows if r.status == "cancelled" and not r.made_up]
        row = self.pick(data, cancelled)
        if row is None:
            return
        starts = self.slot(data)
        replacement = Row(
            row.occurrence,
            row.depth + 1,
            starts,
            starts + (row.ends_at - row.starts_at),
            starts,
            self.therapist,
        )
        after = [dataclasses.replace(r, made_up=True) if r is row else r for r in self.rows]
        after.append(replacement)
        response = self.send(
            "POST", f"/v1/sessions/{row.id}/make-up", json={"starts_at": text(starts)}
        )
        # Nothing to make up once the contract ends before the occurrence (a lower COUNT).
        refused = row.occurrence > self.contract_end() or overlaps(after)
        made = self.attempt(response, Refused(409) if refused else after)
        if made is not None:
            assert (made["makes_up"], made["occurrence"]) == (row.id, row.occurrence)

    @rule(data=st.data(), attended=st.booleans())
    def record_delivery(self, data: st.DataObject, attended: bool) -> None:
        row = self.pick(data, self.past())
        if row is None:
            return
        status = "completed" if attended else "no_show"
        after = [dataclasses.replace(r, status=status) if r is row else r for r in self.rows]
        if attended:
            response = self.send("POST", f"/v1/sessions/{row.id}/complete", json={"attendance": 1})
        else:
            response = self.send("POST", f"/v1/sessions/{row.id}/no-show")
        self.attempt(response, after)

    def contract_end(self) -> float:
        assert self.plan is not None
        if self.plan.count is not None:
            return self.plan.count
        if self.plan.until is not None:
            start, offset = self.series
            return offset + len(self.plan.days_from(start, None))
        return float("inf")

    # Series edits ---------------------------------------------------------------------------

    @rule(
        days_ahead=st.integers(0, 70),
        change=st.sampled_from(["time", "weekday", "duration", "end", "term_break"]),
        value=st.integers(0, 1000),
    )
    def change_series(self, days_ahead: int, change: str, value: int) -> None:
        assert self.plan is not None
        effective = today() + timedelta(days=days_ahead)
        old = self.plan
        if change == "time":
            new = dataclasses.replace(old, clock=time(8 + value % 8, 30 * (value % 2)))
        elif change == "weekday":
            new = dataclasses.replace(old, weekday=value % 5, nth=1 + value % 4)
        elif change == "duration":
            new = dataclasses.replace(old, minutes=(30, 45, 60, 90, 120)[value % 5])
        elif change == "end" and old.count is not None:
            new = dataclasses.replace(old, count=1 + value % 12)
        elif change == "end" and old.open_ended:
            new = dataclasses.replace(old, clock=time(8 + value % 8))
        elif change == "end":
            assert old.until is not None
            new = dataclasses.replace(old, until=effective + timedelta(days=value % 100))
        else:
            gap = effective + timedelta(days=value % 40)
            new = dataclasses.replace(
                old, exdates=old.exdates | {gap + timedelta(days=d) for d in range(7)}
            )
        before = 0
        try:
            after: list[Row] | Refused
            after, before = replanned(self.rows, new, effective, self.therapist, self.horizon_weeks)
        except Refused as refusal:
            after = refusal
        response = self.send(
            "PATCH",
            f"/v1/programs/{self.program['id']}",
            json={"effective_date": effective.isoformat(), "schedule": new.schedule()},
        )
        if self.attempt(response, after) is not None:
            self.plan, self.series = new, (effective, before)

    @rule(days_ahead=st.integers(0, 30), weeks=st.integers(4, 20))
    def regenerate_horizon(self, days_ahead: int, weeks: int) -> None:
        """The materialize job, as if run on a later day: open-ended programs only."""
        assert self.plan is not None
        first = today() + timedelta(days=days_ahead)
        if self.plan.open_ended:
            self.rows = extended(
                self.rows,
                self.plan,
                self.series,
                first + timedelta(weeks=weeks),
                first,
                self.therapist,
            )
        self.run(materialize.extend_horizon(self.db, today=first, weeks=weeks))

    @rule(days_ahead=st.integers(0, 70))
    def hand_over(self, days_ahead: int) -> None:
        effective = today() + timedelta(days=days_ahead)
        cut = at(effective, time())
        other = next(t for t in self.therapists if t != self.therapist)
        after = [
            dataclasses.replace(r, therapist=other)
            if r.status == "scheduled" and r.starts_at >= cut
            else r
            for r in self.rows
        ]
        response = self.send(
            "PATCH",
            f"/v1/programs/{self.program['id']}",
            json={"effective_date": effective.isoformat(), "therapist_id": other},
        )
        if self.attempt(response, Refused(409) if overlaps(after) else after) is not None:
            self.therapist = other

    # After every step -------------------------------------------------------------------------

    @invariant()
    def sessions_are_the_model(self) -> None:
        if self.plan is None:
            return
        sessions = ok(
            self.send(
                "GET",
                "/v1/sessions",
                params={"program_id": self.program["id"], "limit": "200"},
            )
        )["data"]
        by_id = {s["id"]: s for s in sessions}

        def depth(session: dict[str, Any]) -> int:
            parent = session["makes_up"]
            return 0 if parent is None else depth(by_id[parent]) + 1

        actual = {(s["occurrence"], depth(s)): s for s in sessions}
        expected = {r.key: r for r in self.rows}
        assert sorted(actual) == sorted(expected)
        for key, row in expected.items():
            found = actual[key]
            if row.id is not None:
                assert found["id"] == row.id, key  # kept its identity
            assert (
                found["starts_at"],
                found["ends_at"],
                found["status"],
                found["therapist_id"],
                found["rescheduled"],
                found["made_up_by"] is not None,
            ) == (
                text(row.starts_at),
                text(row.ends_at),
                row.status,
                row.therapist,
                row.rescheduled,
                row.made_up,
            ), key
            row.id = found["id"]
        # The contract: at most one live session per occurrence, and a COUNT program never
        # more than COUNT of them (fewer only where one was cancelled and not made up).
        live = [r for r in self.rows if r.live]
        assert len({r.occurrence for r in live}) == len(live)
        if self.plan.count is not None:
            assert len(live) <= self.plan.count
            contract = set(range(1, self.plan.count + 1))
            cancelled = {r.occurrence for r in self.rows if r.status.endswith("cancelled")}
            assert {r.occurrence for r in live} <= contract
            assert contract <= {r.occurrence for r in live} | cancelled
        assert not overlaps(
            [
                Row(
                    0,
                    0,
                    datetime.fromisoformat(s["starts_at"]),
                    datetime.fromisoformat(s["ends_at"]),
                    datetime.min,
                    s["therapist_id"],
                    s["status"],
                )
                for s in sessions
            ]
        )
        self.bills_exactly_the_billable(actual)

    def bills_exactly_the_billable(self, actual: dict[tuple[int, int], dict[str, Any]]) -> None:
        assert self.plan is not None
        body = {
            "period_start": (min(self.plan.start, today()) - timedelta(days=1)).isoformat(),
            "period_end": today().isoformat(),
            "organization_id": self.org["id"],
        }
        ok(self.send("POST", "/v1/invoice-runs", json=body), 201)
        sessions = ok(
            self.send(
                "GET",
                "/v1/sessions",
                params={"program_id": self.program["id"], "limit": "200"},
            )
        )["data"]
        billed = {s["id"] for s in sessions if s["invoice_id"] is not None}
        billable = [r for r in self.rows if r.status in BILLABLE]
        assert billed == {r.id for r in billable}
        invoices = ok(
            self.send(
                "GET",
                "/v1/invoices",
                params={"organization_id": self.org["id"], "limit": "200"},
            )
        )["data"]
        fee = RATE * FEE_PERCENT // 100
        expected = sum(RATE if r.status == "completed" else fee for r in billable)
        assert sum(i["subtotal_cents"] for i in invoices) == expected


async def test_a_series_keeps_its_exceptions_through_every_edit(
    api: Api, db: AsyncSession, settings: Settings
) -> None:
    SeriesMachine.api, SeriesMachine.db = api, db
    SeriesMachine.horizon_weeks = settings.horizon_weeks
    SeriesMachine.loop = asyncio.get_running_loop()
    run = hypothesis.settings(
        max_examples=15,
        stateful_step_count=12,
        derandomize=True,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    await asyncio.to_thread(run_state_machine_as_test, SeriesMachine, settings=run)
