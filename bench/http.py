"""Ensemble's hot paths over real HTTP, as ratios to a bare FastAPI + psycopg ceiling measured
in the same run on the same database.

Run by hand: `.venv/bin/python -m bench.http [--seconds 10] [--quick]` (as a module: a
script named http.py on sys.path would shadow the standard library's `http`) (or `make bench`, which
runs it with the scale claims). It starts a throwaway embedded PostgreSQL (or uses
DATABASE_URL: a scratch database, please), migrates it and seeds 25 organizations, 100
therapists and 100 programs of 50 sessions each (5,000 sessions; half delivered and invoiced
by the real billing run), then starts, each as its own process on 127.0.0.1:

- the ceiling (`bench/ceiling.py`): FastAPI answering one indexed psycopg query, no auth, no
  ORM, no unit of work: the framework, the driver and one database round trip;
- `ensemble serve --workers 1 --no-scheduler`: the real server, rate limits on (Redis on
  127.0.0.1:6379, limit raised so that it counts but never refuses), access log on;
- and, for the scaling row, `ensemble serve --workers 2`.

The load generator is wrk when it is installed (2 threads at 32 connections, 1 at 8: on a
2-core machine a second load-generator thread at 8 connections takes the server's core and
triples its p99), else an asyncio client in this
process (slower: it shares the cores with the servers; the table says which). Each endpoint
is driven at 32 connections for --seconds, then at 8 connections for its p99. Every answer
must be a 2xx (wrk's non-2xx count, or the client's own check); a run with errors fails. The
idempotent POST creates a location with a new Idempotency-Key on every request. Over the
8-connection run each row also gives the server's CPU time per request (its own user + system
time from /proc, divided by the requests answered): steadier than req/s when other work shares
the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.scratch import scratch_database
from bench.sql import run_script
from bench.table import Row, machine, print_table
from service import bootstrap
from service.billing import runs
from service.core import migrate
from service.core.db import make_async_engine, make_session_factory, transaction
from service.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
ORGANIZATIONS, PROGRAMS, SESSIONS_PER_PROGRAM = 25, 100, 50
WRK_TIMEOUT_S = 30

SEED = """
INSERT INTO organizations (id, name, kind, timezone, currency, tax_rate_bps, payment_terms_days,
                           active, created_at, updated_at)
SELECT gen_random_uuid(), 'Org ' || g, 'school', 'America/Edmonton', 'CAD', 500, 30, true,
       now(), now()
FROM generate_series(1, %(orgs)s) g;
INSERT INTO offerings (id, name, format, duration_minutes, rate_cents, currency,
                       max_participants, cancellation_notice_hours, late_cancel_fee_percent,
                       required_credentials, created_at, updated_at)
VALUES (gen_random_uuid(), 'Group', 'group', 60, 15000, 'CAD', 10, 48, 50, '{}', now(), now());
INSERT INTO therapists (id, name, email, credentials, specialties, languages, timezone,
                        max_weekly_minutes, active, created_at, updated_at)
SELECT gen_random_uuid(), 'Therapist ' || g, 't' || g || '@bench.example', '{}', '{}', '{en}',
       'America/Edmonton', 10080, true, now(), now()
FROM generate_series(1, %(programs)s) g;
INSERT INTO programs (id, organization_id, offering_id, therapist_id, title, focus_areas,
                      modality, video_url, participants, rate_cents, currency, timezone,
                      start_date, start_time, duration_minutes, rrule, exdates, skip_holidays,
                      series_start, series_offset, status, created_at, updated_at)
SELECT gen_random_uuid(), o.id, (SELECT id FROM offerings LIMIT 1), t.id, 'Program ' || t.n,
       '{}', 'online', 'https://meet.example.org/b', 5, 15000, 'CAD', 'America/Edmonton',
       %(start)s, '09:00', 60, 'FREQ=DAILY;COUNT=' || %(sessions)s, '{}', false, %(start)s, 0,
       'confirmed', now(), now()
FROM (SELECT id, row_number() OVER (ORDER BY id) n FROM therapists) t
JOIN (SELECT id, row_number() OVER (ORDER BY id) n FROM organizations) o
  ON o.n = (t.n - 1) %% %(orgs)s + 1;
INSERT INTO sessions (id, program_id, organization_id, therapist_id, starts_at, ends_at,
                      original_starts_at, occurrence, rate_cents, status, attendance,
                      rescheduled, sequence, created_at, updated_at)
SELECT gen_random_uuid(), p.id, p.organization_id, p.therapist_id,
       (%(start)s::date + d)::timestamp AT TIME ZONE 'America/Edmonton' + interval '9 hours',
       (%(start)s::date + d)::timestamp AT TIME ZONE 'America/Edmonton' + interval '10 hours',
       (%(start)s::date + d)::timestamp AT TIME ZONE 'America/Edmonton' + interval '9 hours',
       d + 1, 15000,
       CASE WHEN %(start)s::date + d >= current_date - 1 THEN 'scheduled' ELSE 'completed' END,
       CASE WHEN %(start)s::date + d >= current_date - 1 THEN NULL ELSE 4 END,
       false, 0, now(), now()
FROM programs p, generate_series(0, %(sessions)s - 1) d;
"""

POST_SCRIPT = """
-- thread_id is a global: setup() sets it in each thread's own Lua state (a local here would
-- shadow it, and both threads would send the same keys).
local counter = 0
thread_id = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end
request = function()
  counter = counter + 1
  wrk.headers["Idempotency-Key"] = "bench-" .. RUN .. "-" .. thread_id .. "-" .. counter
  return wrk.format("POST", PATH, nil, BODY)
end
-- An answer that is not a 2xx is said on stderr, so that a failed run says what it was.
response = function(status, headers, body)
  if status >= 300 then io.stderr:write(status .. " " .. body .. "\\n") end
end
"""


@dataclass(frozen=True)
class Seeded:
    session_id: str
    program_id: str
    organization_id: str
    keys: dict[str, str]  # role -> key


@dataclass(frozen=True)
class Target:
    label: str
    path: str
    role: str | None  # None: the ceiling (no key)
    post: bool = False


@dataclass(frozen=True)
class Load:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    detail: str = ""  # what the errors were, when there were some
    requests: int = 0  # answered in the run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def seed(url: str) -> Seeded:
    """The data: plain SQL for the catalog and sessions (this measures reads, not booking),
    the real billing run for the invoices, and a key per role."""
    start = date.today() - timedelta(days=SESSIONS_PER_PROGRAM // 2)
    with psycopg.connect(url) as conn:
        run_script(
            conn,
            SEED,
            {
                "orgs": ORGANIZATIONS,
                "programs": PROGRAMS,
                "sessions": SESSIONS_PER_PROGRAM,
                "start": start,
            },
        )
        conn.commit()
        org_id, therapist_id, program_id, session_id = conn.execute(
            "SELECT p.organization_id, p.therapist_id, p.id, s.id FROM programs p "
            "JOIN sessions s ON s.program_id = p.id ORDER BY p.id, s.starts_at LIMIT 1"
        ).fetchone() or (None, None, None, None)
    engine = make_async_engine(url, pool_size=1)
    async with transaction(make_session_factory(engine)) as db:
        # Month by month, as the auto-invoice job bills: a few invoices per organization.
        day = start.replace(day=1)
        while day < date.today():
            month_end = (day + timedelta(days=32)).replace(day=1) - timedelta(days=1)
            await runs.bill_period(db, period_start=day, period_end=month_end, organization_id=None)
            day = month_end + timedelta(days=1)
    await engine.dispose()
    settings = Settings(database_url=url)
    keys = {
        "admin": await bootstrap.create_key(settings, role="admin", name="bench admin"),
        "finance": await bootstrap.create_key(settings, role="finance", name="bench finance"),
        "coordinator": await bootstrap.create_key(
            settings, role="coordinator", name="bench coordinator", organization_id=org_id
        ),
        "therapist": await bootstrap.create_key(
            settings, role="therapist", name="bench therapist", therapist_id=therapist_id
        ),
    }
    return Seeded(str(session_id), str(program_id), str(org_id), keys)


@contextlib.contextmanager
def serving(argv: list[str], env: dict[str, str], port: int, cwd: Path) -> Iterator[int]:
    """The server running until the block ends; yields its process id."""
    with tempfile.TemporaryFile() as log:
        yield from _served(argv, env, port, cwd, log)


def _served(argv: list[str], env: dict[str, str], port: int, cwd: Path, log: Any) -> Iterator[int]:
    proc = subprocess.Popen(
        argv, env={**os.environ, **env}, cwd=cwd, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"{argv[0]} exited: {log.read().decode()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{argv} did not start within 60 s")
            time.sleep(0.2)
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ensemble_server(url: str, port: int, workers: int) -> contextlib.AbstractContextManager[int]:
    env = {
        "DATABASE_URL": url,
        "ENSEMBLE_RATE_LIMIT": "100000000/minute",
        "ENSEMBLE_RATE_LIMIT_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
    }
    argv = [sys.executable, "-m", "service.cli", "serve", "--no-scheduler"]
    argv += ["--port", str(port), "--workers", str(workers)]
    return serving(argv, env, port, ROOT)


def ceiling_server(url: str, port: int) -> contextlib.AbstractContextManager[int]:
    argv = [sys.executable, "-m", "uvicorn", "bench.ceiling:app", "--port", str(port)]
    argv += ["--host", "127.0.0.1", "--no-access-log", "--log-level", "warning"]
    return serving(argv, {"CEILING_DATABASE_URL": url}, port, ROOT)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def wrk(
    url: str,
    headers: dict[str, str],
    connections: int,
    seconds: float,
    post_body: str | None = None,
) -> Load:
    # wrk's own timeout (2 s) would count a slow answer as a socket error; a slow answer is
    # latency, measured like any other (an answer that never comes is still an error).
    # Two threads at 32 connections (the table), one at 8: on two cores a second
    # busy load-generator thread takes the core the server needs, and its wait is the p99.
    threads = 2 if connections > 8 else 1
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    argv += ["--timeout", f"{WRK_TIMEOUT_S}s"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        if post_body is not None:
            path = httpx.URL(url).raw_path.decode()
            script.write(f"RUN = {uuid.uuid4().hex!r}\nPATH = {path!r}\nBODY = {post_body!r}\n")
            script.write(textwrap.dedent(POST_SCRIPT))
            script.flush()
            argv += ["-s", script.name]
        done = subprocess.run([*argv, url], capture_output=True, text=True, check=True)
        out = done.stdout
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    if set(percentiles) != {"50", "99"}:
        raise RuntimeError(f"wrk printed no latency distribution for {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    answered = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    detail = "; ".join(m.group(0) for m in (non_2xx, socket_errors) if m)
    if errors and done.stderr.strip():
        detail += "; first: " + done.stderr.strip().splitlines()[0][:300]
    return Load(rps, _ms(percentiles["50"]), _ms(percentiles["99"]), errors, detail, answered)


async def python_client(
    url: str,
    headers: dict[str, str],
    connections: int,
    seconds: float,
    post_body: str | None = None,
) -> Load:
    latencies: list[float] = []
    errors = 0
    statuses: Counter[int] = Counter()
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                began = time.perf_counter()
                if post_body is None:
                    answer = await client.get(url, headers=headers)
                else:
                    extra = {
                        "Idempotency-Key": uuid.uuid4().hex,
                        "Content-Type": "application/json",
                    }
                    answer = await client.post(url, headers=headers | extra, content=post_body)
                latencies.append(time.perf_counter() - began)
                errors += answer.status_code >= 300
                statuses[answer.status_code] += answer.status_code >= 300

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    cuts = statistics.quantiles(latencies, n=100)
    detail = ", ".join(f"{n} answered {status}" for status, n in sorted(statuses.items()) if n)
    rps = len(latencies) / elapsed
    return Load(rps, cuts[49] * 1000, cuts[98] * 1000, errors, detail, len(latencies))


async def drive(
    url: str,
    headers: dict[str, str],
    connections: int,
    seconds: float,
    post_body: str | None = None,
) -> Load:
    if shutil.which("wrk"):
        load = await asyncio.to_thread(wrk, url, headers, connections, seconds, post_body)
    else:
        load = await python_client(url, headers, connections, seconds, post_body)
    if load.errors:
        raise RuntimeError(f"{url}: {load.errors} answers were not 2xx ({load.detail})")
    return load


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process has used (Linux's /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int] | None:
    """The whole machine's busy and total CPU ticks so far, all cores (Linux's /proc/stat)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(n) for n in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + waiting for I/O
    return sum(fields) - idle, sum(fields)


@dataclass(frozen=True)
class Watched:
    """A run of `drive`, and what the machine did meanwhile (None where Linux's /proc is not)."""

    load: Load
    cpu_ms: float | None  # the server's CPU milliseconds per answered request
    busy: float | None  # how busy the whole machine was, 0-1 of all its cores


async def drive_watched(
    pid: int,
    url: str,
    headers: dict[str, str],
    connections: int,
    seconds: float,
    post_body: str | None = None,
) -> Watched:
    """`drive`, with the server's CPU per request (steadier than req/s on a shared machine:
    it does not depend on how much of the cores the server was given) and how busy the
    machine was (near 1, more workers have no core to run on)."""
    cpu_before, ticks_before = cpu_seconds(pid), machine_ticks()
    load = await drive(url, headers, connections, seconds, post_body)
    cpu_after, ticks_after = cpu_seconds(pid), machine_ticks()
    cpu_ms = busy = None
    if cpu_before is not None and cpu_after is not None and load.requests:
        cpu_ms = (cpu_after - cpu_before) * 1000 / load.requests
    if ticks_before and ticks_after and ticks_after[1] > ticks_before[1]:
        busy = (ticks_after[0] - ticks_before[0]) / (ticks_after[1] - ticks_before[1])
    return Watched(load, cpu_ms, busy)


def _busy_text(busy: float | None) -> str:
    return "" if busy is None else f", machine {busy:.0%} busy"


def _cpu_text(cpu_ms: float | None) -> str:
    return "" if cpu_ms is None else f"; CPU {cpu_ms:.2f} ms a request"


def targets(seeded: Seeded) -> list[Target]:
    return [
        Target("GET /v1/me", "/v1/me", "coordinator"),
        Target("GET /v1/sessions/{id}", f"/v1/sessions/{seeded.session_id}", "coordinator"),
        Target("GET /v1/sessions?limit=50 (admin)", "/v1/sessions?limit=50", "admin"),
        Target("GET /v1/sessions?limit=50 (coordinator)", "/v1/sessions?limit=50", "coordinator"),
        Target("GET /v1/me/sessions", "/v1/me/sessions?limit=50", "therapist"),
        Target("GET /v1/programs/{id}", f"/v1/programs/{seeded.program_id}", "coordinator"),
        Target("GET /v1/invoices?limit=50", "/v1/invoices?limit=50", "finance"),
        Target(
            "POST /v1/organizations/{id}/locations (Idempotency-Key)",
            f"/v1/organizations/{seeded.organization_id}/locations",
            "admin",
            post=True,
        ),
    ]


LOCATION = '{"name": "Bench room", "address": "1 Main St", "timezone": "America/Edmonton"}'

# The goals of the issue, as fractions of the ceiling's req/s at 32 connections.
GOALS = {"GET /v1/me": 0.5, "GET /v1/sessions/{id}": 0.5}
LIST_GOAL, POST_GOAL, P99_GOAL_MS = 0.35, 0.25, 50.0


def goal_for(target: Target) -> float:
    if target.post:
        return POST_GOAL
    return GOALS.get(target.label, LIST_GOAL)


async def measure(url: str, *, quick: bool = False, seconds: float | None = None) -> list[Row]:
    """The table of bench/run_all.py: one row per endpoint (req/s at 32 connections as a
    ratio to the ceiling, p99 at 8 connections), and the 2-worker scaling row."""
    seconds = seconds or (3.0 if quick else 10.0)
    migrate.upgrade(url)
    seeded = await seed(url)
    generator = "wrk" if shutil.which("wrk") else "Python asyncio client"
    print(f"# load generator: {generator}; {seconds:g} s per run", flush=True)
    ceiling_port, server_port = free_port(), free_port()
    rows: list[Row] = []
    with (
        ceiling_server(url, ceiling_port) as ceiling_pid,
        ensemble_server(url, server_port, workers=1) as server_pid,
    ):
        ceiling_url = f"http://127.0.0.1:{ceiling_port}/sessions/{seeded.session_id}"
        await drive(ceiling_url, {}, 8, 1)  # warm: first requests build what later ones reuse
        ceiling = await drive(ceiling_url, {}, 32, seconds)
        ceiling_8 = await drive_watched(ceiling_pid, ceiling_url, {}, 8, seconds)
        rows.append(
            Row(
                claim="ceiling: bare FastAPI + one psycopg row",
                measured=f"{ceiling.requests_per_second:,.0f} req/s, p50 {ceiling.p50_ms:.1f} ms, "
                f"p99 {ceiling.p99_ms:.1f} ms (8 conn: p99 {ceiling_8.load.p99_ms:.1f} ms"
                f"{_cpu_text(ceiling_8.cpu_ms)})",
                baseline="—",
                ratio=1.0,
                goal="—",
                met=True,
            )
        )
        for target in targets(seeded):
            url_of = f"http://127.0.0.1:{server_port}{target.path}"
            headers = {"Authorization": f"Bearer {seeded.keys[target.role or 'admin']}"}
            body = LOCATION if target.post else None
            if body is not None:
                headers["Content-Type"] = "application/json"
            await drive(url_of, headers, 8, 1, body)  # warm, as for the ceiling
            at_32 = await drive(url_of, headers, 32, seconds, body)
            at_8 = await drive_watched(server_pid, url_of, headers, 8, seconds, body)
            ratio = at_32.requests_per_second / ceiling.requests_per_second
            goal = goal_for(target)
            p99_ok = target.post or at_8.load.p99_ms < P99_GOAL_MS
            rows.append(
                Row(
                    claim=target.label,
                    measured=f"{at_32.requests_per_second:,.0f} req/s, p50 {at_32.p50_ms:.1f} ms, "
                    f"p99 {at_32.p99_ms:.1f} ms (8 conn: p99 {at_8.load.p99_ms:.1f} ms"
                    f"{_cpu_text(at_8.cpu_ms)})",
                    baseline=f"{ceiling.requests_per_second:,.0f} req/s (ceiling)",
                    ratio=ratio,
                    goal=f"≥ {goal:.2f}"
                    + ("" if target.post else f", 8-conn p99 < {P99_GOAL_MS:g} ms"),
                    met=ratio >= goal and p99_ok,
                )
            )
            print(f"  {target.label}: {rows[-1].measured}  x{ratio:.2f}", flush=True)
    rows.append(await scaling(url, seeded, seconds))
    return rows


async def scaling(url: str, seeded: Seeded, seconds: float) -> Row:
    """`GET /v1/sessions/{id}` on `--workers 1` and `--workers 2`, one after the other, each
    with how busy the machine was (the load generator and PostgreSQL share its cores)."""
    headers = {"Authorization": f"Bearer {seeded.keys['coordinator']}"}
    results = []
    for workers in (1, 2):
        port = free_port()
        with ensemble_server(url, port, workers=workers) as pid:
            target = f"http://127.0.0.1:{port}/v1/sessions/{seeded.session_id}"
            await drive(target, headers, 8, 1)  # every worker warm
            results.append(await drive_watched(pid, target, headers, 32, seconds))
    one, two = (watched.load for watched in results)
    one_busy, two_busy = (watched.busy for watched in results)
    cores = os.cpu_count() or 1
    ratio = two.requests_per_second / one.requests_per_second
    return Row(
        claim="GET /v1/sessions/{id} on --workers 2",
        measured=f"{two.requests_per_second:,.0f} req/s{_busy_text(two_busy)}",
        baseline=f"{one.requests_per_second:,.0f} req/s (--workers 1{_busy_text(one_busy)})",
        ratio=ratio,
        goal=f"near-linear up to {cores} cores (≥ {0.8 * min(2, cores):.1f})",
        met=ratio >= 0.8 * min(2, cores),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()

    async def run(url: str) -> None:
        rows = await measure(url, quick=args.quick, seconds=args.seconds)
        print_table(rows, machine())

    with scratch_database(os.environ.get("DATABASE_URL")) as url:
        asyncio.run(run(url))


if __name__ == "__main__":
    main()
