"""The conflict check stays flat as the sessions table grows: the same 52-week proposal for the
same therapist is checked against 10,000, 100,000 and 1,000,000 sessions, through the
service's clash query (service.programs.staffing_facts.clashes, what every assign, confirm,
reschedule and the suggestions run) and through a rolled-back write of 52 sessions that the
exclusion constraint checks (service.programs.materialize.insert_sessions). Both should cost
the same at every size: the GiST index behind `ex_sessions_therapist_overlap` finds a
therapist's overlapping sessions without reading the others.

Run by hand: `.venv/bin/python -m bench.conflict_check [--quick]`. Prints the best of 50 at
each size, the ratio of the largest to the smallest, and the clash query's
`EXPLAIN (ANALYZE, BUFFERS)` at the largest size.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from functools import partial
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from bench.scratch import scratch_database
from bench.sql import run_script
from bench.table import Row, ms, render
from service.core import migrate
from service.core.db import make_async_engine, make_session_factory
from service.programs import materialize, staffing_facts
from service.scheduling.conflicts import Slot

PER_THERAPIST = 500  # sessions per therapist: more sessions means more therapists
PROPOSED = 52  # weekly sessions proposed: a year's program
INDEX = "ex_sessions_therapist_overlap"

# Therapists numbered [first, last], one program each, PER_THERAPIST daily sessions each from
# %(start)s at 09:00-10:00 in Edmonton; every tenth cancelled (not live, outside the index).
GROW = """
INSERT INTO therapists (id, name, email, credentials, specialties, languages, timezone,
                        max_weekly_minutes, active, created_at, updated_at)
SELECT gen_random_uuid(), 'T' || g, 't' || g || '@bench.example', '{}', '{}', '{en}',
       'America/Edmonton', 10080, true, now(), now()
FROM generate_series(%(first)s::int, %(last)s::int) g;
INSERT INTO programs (id, organization_id, offering_id, therapist_id, title, focus_areas,
                      modality, video_url, participants, rate_cents, currency, timezone,
                      start_date, start_time, duration_minutes, rrule, exdates, skip_holidays,
                      series_start, series_offset, status, created_at, updated_at)
SELECT gen_random_uuid(), (SELECT id FROM organizations), (SELECT id FROM offerings), t.id,
       'Program', '{}', 'online', 'https://meet.example.org/b', 5, 15000, 'CAD',
       'America/Edmonton', %(start)s, '09:00', 60, 'FREQ=DAILY;COUNT=' || %(per)s::int, '{}', false,
       %(start)s, 0, 'confirmed', now(), now()
FROM therapists t WHERE NOT EXISTS (SELECT 1 FROM programs p WHERE p.therapist_id = t.id);
INSERT INTO sessions (id, program_id, organization_id, therapist_id, starts_at, ends_at,
                      original_starts_at, occurrence, rate_cents, status, rescheduled, sequence,
                      created_at, updated_at)
SELECT gen_random_uuid(), p.id, p.organization_id, p.therapist_id,
       (%(start)s::date + d)::timestamp AT TIME ZONE 'America/Edmonton' + interval '9 hours',
       (%(start)s::date + d)::timestamp AT TIME ZONE 'America/Edmonton' + interval '10 hours',
       (%(start)s::date + d)::timestamp AT TIME ZONE 'America/Edmonton' + interval '9 hours',
       d + 1, 15000, CASE WHEN d %% 10 = 0 THEN 'cancelled' ELSE 'scheduled' END, false, 0,
       now(), now()
FROM programs p CROSS JOIN generate_series(0, %(per)s::int - 1) d
WHERE NOT EXISTS (SELECT 1 FROM sessions s WHERE s.program_id = p.id);
"""

SEED = """
INSERT INTO organizations (id, name, kind, timezone, currency, tax_rate_bps, payment_terms_days,
                           created_at, updated_at)
VALUES (gen_random_uuid(), 'Bench', 'school', 'America/Edmonton', 'CAD', 500, 30, now(), now());
INSERT INTO offerings (id, name, format, duration_minutes, rate_cents, currency,
                       max_participants, cancellation_notice_hours, late_cancel_fee_percent,
                       required_credentials, created_at, updated_at)
VALUES (gen_random_uuid(), 'Group', 'group', 60, 15000, 'CAD', 10, 48, 50, '{}', now(), now());
"""


def _run_script(url: str, script: str, params: dict[str, Any]) -> None:
    with psycopg.connect(url) as conn:
        run_script(conn, script, params)


def grow(url: str, sessions: int, start: date) -> None:
    """Add therapists (with their programs and sessions) until there are `sessions`."""
    with psycopg.connect(url) as conn:
        have = conn.execute("SELECT count(*) FROM therapists").fetchone()
    first = (have[0] if have else 0) + 1
    last = sessions // PER_THERAPIST
    step = 200  # therapists per transaction: 100,000 sessions
    for low in range(first, last + 1, step):
        params = {"first": low, "last": min(low + step - 1, last), "per": PER_THERAPIST}
        _run_script(url, GROW, {**params, "start": start})
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE sessions")


async def best_of(repeat: int, call: Callable[[], Awaitable[Any]]) -> float:
    """The fastest of `repeat` calls after a warm-up: on a shared machine the others measure
    the neighbours as much as the call (as timeit does, for the same reason)."""
    await call()  # warm: plans and caches
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - began)
    return min(samples)


def execution_ms(plan: str) -> float:
    found = re.search(r"^Execution Time: ([0-9.]+) ms$", plan, re.MULTILINE)
    assert found, plan
    return float(found.group(1))


class Probe:
    """The first therapist's 52 weekly slots from today: overlapping their sessions for the
    check, and free at night for the write."""

    def __init__(self, url: str) -> None:
        with psycopg.connect(url) as conn:
            found = conn.execute(
                "SELECT p.id, p.organization_id, p.therapist_id FROM programs p "
                "JOIN therapists t ON t.id = p.therapist_id WHERE t.name = 'T1'"
            ).fetchone()
            assert found is not None
            self.program_id, self.organization_id, self.therapist_id = found
            starts = [
                starts_at
                for (starts_at,) in conn.execute(
                    "SELECT starts_at FROM sessions WHERE therapist_id = %s AND starts_at > now()"
                    " ORDER BY starts_at",
                    (self.therapist_id,),
                )
            ]
        # Half an hour into each of their sessions a week apart (every tenth is cancelled).
        self.slots = [
            Slot(at + timedelta(minutes=30), at + timedelta(minutes=90)) for at in starts[::7]
        ][:PROPOSED]
        assert len(self.slots) == PROPOSED

    async def check(self, db: AsyncSession) -> int:
        found = await staffing_facts.clashes(
            db, therapist_ids=[self.therapist_id], slots=self.slots
        )
        return len(found)

    async def write(self, db: AsyncSession) -> None:
        """52 new sessions at 03:00 UTC (no clash), checked by the exclusion constraint, then
        rolled back."""
        rows = [
            {
                "program_id": self.program_id,
                "organization_id": self.organization_id,
                "therapist_id": self.therapist_id,
                "starts_at": slot.starts_at + timedelta(hours=10, minutes=30),
                "ends_at": slot.ends_at + timedelta(hours=10, minutes=30),
                "occurrence": 100_000 + n,
                "rate_cents": 15000,
            }
            for n, slot in enumerate(self.slots)
        ]
        async with db.begin():
            assert await materialize.insert_sessions(db, rows) == PROPOSED
            await db.rollback()

    async def explain(self, db: AsyncSession) -> str:
        plan = await db.execute(
            text("EXPLAIN (ANALYZE, BUFFERS) " + str(staffing_facts._CLASHES.text)),
            {
                "therapists": [self.therapist_id],
                "starts": [s.starts_at for s in self.slots],
                "ends": [s.ends_at for s in self.slots],
                "ignored": [],
            },
        )
        await db.rollback()
        return "\n".join(line for (line,) in plan)


last_plan = ""  # the clash query's plan at the largest size, for docs/performance.md


async def measure(url: str, *, quick: bool = False) -> list[Row]:
    """The overlap check and the constrained write at each size; ratios largest / smallest."""
    global last_plan
    sizes = (1_000, 10_000) if quick else (10_000, 100_000, 1_000_000)
    repeat = 10 if quick else 50
    migrate.upgrade(url)
    _run_script(url, SEED, {})
    start = date.today() - timedelta(days=PER_THERAPIST // 5)
    engine = make_async_engine(url, pool_size=1)
    factory = make_session_factory(engine)
    checks: dict[int, float] = {}
    writes: dict[int, float] = {}
    # The database's own Execution Time, best of `repeat` like the rows timed from Python: a
    # sub-millisecond median on a shared machine measures the neighbours as much as the query.
    executed: dict[int, float] = {}
    clashes = 0
    try:
        for size in sizes:
            began = time.perf_counter()
            grow(url, size, start)
            print(f"  {size:,} sessions loaded in {time.perf_counter() - began:.1f} s", flush=True)
            probe = Probe(url)
            async with factory() as db:
                clashes = await probe.check(db)
                await db.rollback()
                checks[size] = await best_of(repeat, partial(probe.check, db))
                await db.rollback()
                writes[size] = await best_of(repeat, partial(probe.write, db))
                plans = [await probe.explain(db) for _ in range(repeat)]
                executed[size] = min(execution_ms(plan) for plan in plans) / 1000
                last_plan = plans[-1]
            print(
                f"  {size:>9,} sessions: check {checks[size] * 1000:6.2f} ms "
                f"({clashes} clashes; in the database {executed[size] * 1000:6.3f} ms), "
                f"write {writes[size] * 1000:6.2f} ms",
                flush=True,
            )
    finally:
        await engine.dispose()
    small, large = sizes[0], sizes[-1]
    uses_index = INDEX in last_plan
    print(f"  EXPLAIN (ANALYZE, BUFFERS) at {large:,} sessions:\n{last_plan}", flush=True)
    sizes_text = " / ".join(f"{s:,}" for s in sizes)
    rows = []
    for what, times in (
        (
            f"conflict check ({PROPOSED} slots, clash query), database execution, best of {repeat}",
            executed,
        ),
        (f"conflict check through the service, best of {repeat}", checks),
        (
            f"constrained write ({PROPOSED} sessions, exclusion constraint), best of {repeat}",
            writes,
        ),
    ):
        ratio = times[large] / times[small]
        rows.append(
            Row(
                claim=f"{what}, at {sizes_text} sessions",
                measured=" / ".join(ms(times[s]) for s in sizes),
                baseline=f"the same at {small:,}: {ms(times[small])}",
                ratio=ratio,
                goal=f"flat: {large:,} / {small:,} <= 1.5, GiST index used",
                met=ratio <= 1.5 and uses_index,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000 sessions")
    args = parser.parse_args()
    with scratch_database() as url:
        print(render(asyncio.run(measure(url, quick=args.quick))))


if __name__ == "__main__":
    main()
