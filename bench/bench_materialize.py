"""Confirming a program writes its sessions set-based: the cost of confirming a 500-session
program should be a small multiple of a 1-session one, not 500 times it, and materializing
100,000 sessions should cost within 2x a raw COPY of the same rows.

Run by hand: `.venv/bin/python -m bench.bench_materialize [--repeat N]`. Prints the median
time to book, staff and confirm programs of 1, 50 and 500 sessions, and each one's ratio to the
1-session case measured in the same run. `measure()` (run by `make bench`) times the service's
`materialize` for 200 programs of 500 sessions against psycopg's `COPY` of the same rows.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import date, timedelta

import httpx
import psycopg
from sqlalchemy import select

from bench.scratch import scratch_database
from bench.sql import run_script
from bench.table import Row, secs
from models.programs import Program
from service import bootstrap
from service.app import create_app
from service.core import migrate
from service.core.db import make_async_engine, make_session_factory, transaction
from service.core.settings import Settings
from service.programs import materialize
from service.scheduling import plan

WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")

# 200 therapists, each staffed on one requested program of PER_PROGRAM daily sessions.
SEED = """
INSERT INTO organizations (id, name, kind, timezone, currency, tax_rate_bps, payment_terms_days,
                           created_at, updated_at)
VALUES (gen_random_uuid(), 'Bench', 'school', 'America/Edmonton', 'CAD', 500, 30, now(), now());
INSERT INTO offerings (id, name, format, duration_minutes, rate_cents, currency,
                       max_participants, cancellation_notice_hours, late_cancel_fee_percent,
                       required_credentials, created_at, updated_at)
VALUES (gen_random_uuid(), 'Group', 'group', 60, 15000, 'CAD', 10, 48, 50, '{}', now(), now());
INSERT INTO therapists (id, name, email, credentials, specialties, languages, timezone,
                        max_weekly_minutes, active, created_at, updated_at)
SELECT gen_random_uuid(), 'T' || g, 't' || g || '@bench.example', '{}', '{}', '{en}',
       'America/Edmonton', 10080, true, now(), now()
FROM generate_series(1, %(programs)s) g;
INSERT INTO programs (id, organization_id, offering_id, therapist_id, title, focus_areas,
                      modality, video_url, participants, rate_cents, currency, timezone,
                      start_date, start_time, duration_minutes, rrule, exdates, skip_holidays,
                      series_start, series_offset, status, created_at, updated_at)
SELECT gen_random_uuid(), (SELECT id FROM organizations), (SELECT id FROM offerings), t.id,
       'Program', '{}', 'online', 'https://meet.example.org/b', 5, 15000, 'CAD',
       'America/Edmonton', %(start)s, '09:00', 60, 'FREQ=DAILY;COUNT=' || %(per_program)s, '{}',
       false, %(start)s, 0, 'requested', now(), now()
FROM therapists t;
"""
PER_PROGRAM = 500  # a program's most sessions (a COUNT rule is capped at 500)
COLUMNS = (
    "id",
    "program_id",
    "organization_id",
    "therapist_id",
    "starts_at",
    "ends_at",
    "original_starts_at",
    "occurrence",
    "rate_cents",
    "status",
    "rescheduled",
    "sequence",
    "created_at",
    "updated_at",
)


async def run(url: str, repeat: int) -> None:
    settings = Settings(database_url=url)
    migrate.upgrade(url)
    auth = {
        "Authorization": f"Bearer {await bootstrap.create_key(settings, role='admin', name='b')}"
    }
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as http,
    ):
        org = (
            await http.post(
                "/v1/organizations",
                headers=auth,
                json={"name": "Bench", "kind": "school", "timezone": "America/Edmonton"},
            )
        ).json()
        offering = (
            await http.post(
                "/v1/offerings",
                headers=auth,
                json={
                    "name": "Bench",
                    "format": "group",
                    "duration_minutes": 30,
                    "rate_cents": 1,
                    "max_participants": 5,
                },
            )
        ).json()
        today = date.today()
        first_monday = today + timedelta(days=7 - today.weekday())  # next week's Monday
        baseline = None
        for count in (1, 50, 500):
            samples = []
            for i in range(repeat):
                therapist = (
                    await http.post(
                        "/v1/therapists",
                        headers=auth,
                        json={
                            "name": "T",
                            "email": f"t{count}-{i}@bench.example",
                            "timezone": "America/Edmonton",
                        },
                    )
                ).json()
                # Available every day, so that the daily program can be staffed.
                available = await http.put(
                    f"/v1/therapists/{therapist['id']}/availability",
                    headers=auth,
                    json=[{"weekday": d, "start": "00:00", "end": "23:59"} for d in WEEKDAYS],
                )
                assert available.status_code == 200, available.text
                started = time.perf_counter()
                program = (
                    await http.post(
                        "/v1/programs",
                        headers=auth,
                        json={
                            "organization_id": org["id"],
                            "offering_id": offering["id"],
                            "title": "B",
                            "modality": "online",
                            "video_url": "https://meet.example.org/b",
                            "participants": 1,
                            "schedule": {
                                "timezone": "America/Edmonton",
                                "start_date": first_monday.isoformat(),
                                "start_time": "09:00",
                                "rrule": f"FREQ=DAILY;COUNT={count}",
                            },
                        },
                    )
                ).json()
                assigned = await http.post(
                    f"/v1/programs/{program['id']}/assign",
                    headers=auth,
                    json={"therapist_id": therapist["id"]},
                )
                assert assigned.status_code == 200, assigned.text
                confirmed = await http.post(f"/v1/programs/{program['id']}/confirm", headers=auth)
                assert confirmed.status_code == 200, confirmed.text
                samples.append(time.perf_counter() - started)
            median = statistics.median(samples)
            baseline = baseline or median
            print(
                f"book+assign+confirm {count:4d} sessions  {median * 1000:8.1f} ms  "
                f"x{median / baseline:5.1f}"
            )


async def _materialize_all(url: str, planned: list[tuple[Program, plan.Numbered]]) -> float:
    """The service's materialize for every program, in one transaction, commit included."""
    engine = make_async_engine(url, pool_size=1)
    factory = make_session_factory(engine)
    try:
        async with factory() as db:  # connect before the clock starts
            await db.execute(select(1))
        began = time.perf_counter()
        async with transaction(factory) as db:
            added = 0
            for program, numbered in planned:
                added += await materialize.materialize(db, program, numbered)
        elapsed = time.perf_counter() - began
    finally:
        await engine.dispose()
    assert added == sum(len(n) for _, n in planned), added
    return elapsed


def _copy_rows(url: str, rows: list[tuple[object, ...]]) -> float:
    """psycopg's COPY of the same rows into the same table, commit included."""
    with psycopg.connect(url) as conn:
        began = time.perf_counter()
        with conn.cursor() as cursor:
            copy_sql = f"COPY sessions ({', '.join(COLUMNS)}) FROM STDIN"
            with cursor.copy(copy_sql) as copy:
                for row in rows:
                    copy.write_row(row)
        conn.commit()
        return time.perf_counter() - began


def _empty_sessions(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE sessions CASCADE")
        conn.execute("VACUUM ANALYZE sessions")


async def measure(url: str, *, quick: bool = False) -> list[Row]:
    """Materializing 100,000 sessions (200 programs of 500; quick: 20 of 500) through the
    service's set-based insert, against COPY of the same rows, median of runs on an empty
    sessions table each time."""
    programs, repeat = (20, 1) if quick else (200, 3)
    migrate.upgrade(url)
    with psycopg.connect(url) as conn:
        start = date.today() + timedelta(days=30)
        params = {"programs": programs, "per_program": PER_PROGRAM, "start": start}
        run_script(conn, SEED, params)
    engine = make_async_engine(url, pool_size=1)
    async with make_session_factory(engine)() as db:
        loaded = list((await db.execute(select(Program))).scalars())
    await engine.dispose()
    planned = [(p, plan.series(p, holiday_region=None, until=None)) for p in loaded]
    total = sum(len(numbered) for _, numbered in planned)
    service_s, copy_s = [], []
    for _ in range(repeat):
        _empty_sessions(url)
        service_s.append(await _materialize_all(url, planned))
        with psycopg.connect(url) as conn:
            rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM sessions").fetchall()
        assert len(rows) == total
        _empty_sessions(url)
        copy_s.append(_copy_rows(url, rows))
    service, copied = statistics.median(service_s), statistics.median(copy_s)
    ratio = service / copied
    return [
        Row(
            claim=f"materialize {total:,} sessions ({programs} programs of {PER_PROGRAM})",
            measured=secs(service),
            baseline=f"COPY of the same rows {secs(copied)}",
            ratio=ratio,
            goal="<= 2x COPY",
            met=ratio <= 2,
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with scratch_database() as url:
        asyncio.run(run(url, args.repeat))


if __name__ == "__main__":
    main()
