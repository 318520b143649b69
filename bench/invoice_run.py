"""An invoice run over 10,000 delivered sessions across 200 organizations, timed against a
hand-written INSERT ... SELECT of the same lines on the same database in the same run.

Run by hand: `.venv/bin/python -m bench.invoice_run [--orgs 200 --sessions-per-org 50]`.
Prints both timings, their ratio (goal: within 3x) and the peak Python memory of the run.
The data is written with plain SQL (the benchmark measures billing, not booking).
`measure()` (run by `make bench`) returns the same comparison as a table row.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import tracemalloc
from datetime import date, timedelta

import psycopg

from bench.scratch import scratch_database
from bench.sql import run_script
from bench.table import Row, ms
from service.billing import runs
from service.core import migrate
from service.core.db import make_async_engine, make_session_factory, transaction

SEED = """
INSERT INTO organizations (id, name, kind, timezone, currency, tax_rate_bps, payment_terms_days,
                           created_at, updated_at)
SELECT gen_random_uuid(), 'Org ' || g, 'school', 'America/Edmonton', 'CAD', 500, 30, now(), now()
FROM generate_series(1, %(orgs)s) g;
INSERT INTO offerings (id, name, format, duration_minutes, rate_cents, currency,
                       max_participants, cancellation_notice_hours, late_cancel_fee_percent,
                       required_credentials, created_at, updated_at)
VALUES (gen_random_uuid(), 'Group', 'group', 60, 15000, 'CAD', 10, 48, 50, '{}', now(), now());
INSERT INTO therapists (id, name, email, credentials, specialties, languages, timezone,
                        max_weekly_minutes, active, created_at, updated_at)
SELECT gen_random_uuid(), 'T' || g, 't' || g || '@bench.example', '{}', '{}', '{en}',
       'America/Edmonton', 10080, true, now(), now()
FROM generate_series(1, %(orgs)s) g;
INSERT INTO programs (id, organization_id, offering_id, therapist_id, title, focus_areas,
                      modality, video_url, participants, rate_cents, currency, timezone,
                      start_date, start_time, duration_minutes, rrule, exdates, skip_holidays,
                      series_start, series_offset, status, created_at, updated_at)
SELECT gen_random_uuid(), o.id, (SELECT id FROM offerings LIMIT 1), t.id, 'Program', '{}',
       'online', 'https://meet.example.org/b', 5, 15000, 'CAD', 'America/Edmonton',
       %(start)s, '09:00', 60, 'FREQ=DAILY;COUNT=' || %(per_org)s, '{}', false, %(start)s, 0,
       'confirmed',
       now(), now()
FROM (SELECT id, row_number() OVER (ORDER BY id) n FROM organizations) o
JOIN (SELECT id, row_number() OVER (ORDER BY id) n FROM therapists) t ON t.n = o.n;
INSERT INTO sessions (id, program_id, organization_id, therapist_id, starts_at, ends_at,
                      original_starts_at, occurrence, rate_cents, status, attendance,
                      rescheduled, sequence, created_at, updated_at)
SELECT gen_random_uuid(), p.id, p.organization_id, p.therapist_id,
       (%(start)s::date + d)::timestamp AT TIME ZONE 'America/Edmonton' + interval '9 hours',
       (%(start)s::date + d)::timestamp AT TIME ZONE 'America/Edmonton' + interval '10 hours',
       (%(start)s::date + d)::timestamp AT TIME ZONE 'America/Edmonton' + interval '9 hours',
       d + 1, 15000, CASE WHEN d %% 10 = 0 THEN 'no_show' ELSE 'completed' END, 3, false, 0,
       now(), now()
FROM programs p, generate_series(0, %(per_org)s - 1) d;
"""

# The same drafts and lines, written by hand into the same tables (same constraints and
# indexes), with none of the run's guards: the floor a set-based run can approach.
BASELINE = """
INSERT INTO invoices (id, organization_id, currency, status, period_start, period_end,
                      tax_rate_bps, subtotal_cents, tax_cents, total_cents, amount_paid_cents,
                      amount_credited_cents, stripe_sync_status, created_at, updated_at)
SELECT gen_random_uuid(), o.id, 'CAD', 'draft', current_date, current_date, 500, 0, 0, 0, 0, 0,
       'disabled', now(), now()
FROM organizations o;
INSERT INTO invoice_lines (id, invoice_id, session_id, description, quantity,
                           unit_amount_cents, amount_cents, live, created_at)
SELECT gen_random_uuid(), i.id, s.id, p.title, 1,
       CASE s.status WHEN 'completed' THEN s.rate_cents
            ELSE (2 * s.rate_cents * f.late_cancel_fee_percent + 100) / 200 END,
       CASE s.status WHEN 'completed' THEN s.rate_cents
            ELSE (2 * s.rate_cents * f.late_cancel_fee_percent + 100) / 200 END, true, now()
FROM sessions s JOIN programs p ON p.id = s.program_id JOIN offerings f ON f.id = p.offering_id
JOIN invoices i ON i.organization_id = s.organization_id AND i.status = 'draft'
WHERE s.status IN ('completed', 'late_cancelled', 'no_show');
"""

RESET = """
DELETE FROM invoice_lines;
DELETE FROM invoices;
"""


async def timed_run(url: str, start: date, end: date) -> tuple[float, int]:
    engine = make_async_engine(url, pool_size=1)
    factory = make_session_factory(engine)
    tracemalloc.start()
    began = time.perf_counter()
    async with transaction(factory) as db:
        touched = await runs.bill_period(
            db, period_start=start, period_end=end, organization_id=None
        )
    elapsed = time.perf_counter() - began
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    await engine.dispose()
    assert touched, "nothing was billed"
    return elapsed, peak


def timed_baseline(url: str) -> float:
    with psycopg.connect(url) as conn:
        began = time.perf_counter()
        run_script(conn, BASELINE)
        conn.commit()
        elapsed = time.perf_counter() - began
        run_script(conn, RESET)
        conn.commit()
    return elapsed


def seed(url: str, orgs: int, per_org: int) -> date:
    """Migrate and write the delivered sessions; returns the first day of the period."""
    migrate.upgrade(url)
    start = date.today() - timedelta(days=per_org + 5)
    with psycopg.connect(url) as conn:
        params = {"orgs": orgs, "per_org": per_org, "start": start}
        run_script(conn, SEED, params)
    return start


def compare(url: str, start: date, repeat: int) -> tuple[float, float, int]:
    """Median run and baseline seconds, and the run's peak Python memory, each on no
    invoices."""
    runs_s, baselines_s, peaks = [], [], []
    for _ in range(repeat):
        baselines_s.append(timed_baseline(url))
        elapsed, peak = asyncio.run(timed_run(url, start, date.today()))
        runs_s.append(elapsed)
        peaks.append(peak)
        with psycopg.connect(url) as conn:
            run_script(conn, RESET)
    return statistics.median(runs_s), statistics.median(baselines_s), max(peaks)


async def measure(url: str, *, quick: bool = False) -> list[Row]:
    """The invoice run over 10,000 sessions (quick: 1,000) against the hand-written
    INSERT ... SELECT of the same lines."""
    orgs, per_org, repeat = (20, 50, 1) if quick else (200, 50, 3)
    start = seed(url, orgs, per_org)
    # The comparison runs its own event loops (as the by-hand run does): give it a thread.
    run_s, base_s, peak = await asyncio.to_thread(compare, url, start, repeat)
    ratio = run_s / base_s
    return [
        Row(
            claim=f"invoice run over {orgs * per_org:,} sessions ({orgs} organizations)",
            measured=f"{ms(run_s)} (peak Python memory {peak / 1024 / 1024:.1f} MiB)",
            baseline=f"hand-written INSERT ... SELECT {ms(base_s)}",
            ratio=ratio,
            goal="<= 3x INSERT ... SELECT",
            met=ratio <= 3,
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orgs", type=int, default=200)
    parser.add_argument("--sessions-per-org", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with scratch_database() as url:
        start = seed(url, args.orgs, args.sessions_per_org)
        with psycopg.connect(url) as conn:
            count = conn.execute("SELECT count(*) FROM sessions").fetchone()
        print(f"{count[0] if count else 0} sessions across {args.orgs} organizations")
        run_s, base_s, peak = compare(url, start, args.repeat)
        print(f"hand-written INSERT ... SELECT  {base_s * 1000:8.1f} ms")
        print(f"invoice run (service)           {run_s * 1000:8.1f} ms   x{run_s / base_s:.2f}")
        print(f"peak Python memory during a run {peak / 1024:8.0f} KiB")


if __name__ == "__main__":
    main()
