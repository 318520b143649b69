"""`make bench`: every scale claim of the README, measured in one run on one throwaway embedded
PostgreSQL, printed as one table of ratios with the date, the machine and the server version.

    .venv/bin/python bench/run_all.py [--quick] [--only NAME ...]

`--quick` uses small sizes (a smoke run: the ratios then mean little); `--only` runs the named
benchmarks (repeatable): materialize, suggestions, conflicts, invoices, webhooks, http.

Each benchmark is a module of this package with

    async def measure(url: str, *, quick: bool = False) -> list[bench.table.Row]

where `url` is a libpq URL of a fresh, empty database on the run's server that the benchmark
may migrate, fill and leave dirty (each gets its own, dropped when it is done).
`bench/http.py` (the request-path benchmark) runs too when it exists, with the same
interface.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a file: put the repository first instead of bench/, whose http.py would otherwise
    # shadow the standard library's `http` for everything imported below.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import asyncio
import importlib
import importlib.util
import logging
import time
import traceback

import psycopg
from psycopg import sql

from bench.scratch import embedded_server
from bench.table import Row, load_average, machine, render
from service.core.embedded import EmbeddedPostgres

# name -> module, in the order they run (the request-path benchmark last: it starts servers).
BENCHMARKS = {
    "materialize": "bench.bench_materialize",
    "suggestions": "bench.suggestions",
    "conflicts": "bench.conflict_check",
    "invoices": "bench.invoice_run",
    "webhooks": "bench.webhooks",
    "http": "bench.http",
}
OPTIONAL = {"http"}  # written separately; skipped while it does not exist


def available(name: str) -> bool:
    return name not in OPTIONAL or importlib.util.find_spec(BENCHMARKS[name]) is not None


async def run(server: EmbeddedPostgres, names: list[str], *, quick: bool) -> list[Row]:
    rows: list[Row] = []
    for name in names:
        if not available(name):
            print(f"== {name}: {BENCHMARKS[name]} does not exist yet, skipped", flush=True)
            continue
        print(f"== {name}", flush=True)
        began = time.perf_counter()
        try:
            module = importlib.import_module(BENCHMARKS[name])
            found = await module.measure(server.ensure_database(f"bench_{name}"), quick=quick)
        except Exception:
            traceback.print_exc()
            found = [Row(f"{name}: the benchmark failed", "error", "—", None, "runs", False)]
        rows += found
        print(render(found), flush=True)
        print(f"   ({time.perf_counter() - began:.0f} s)", flush=True)
        quiet(server, f"bench_{name}")
    return rows


def quiet(server: EmbeddedPostgres, database: str) -> None:
    """Drop a finished benchmark's database and flush the server's dirty pages, so that the
    next one does not pay for its autovacuum and checkpoint (a million sessions leave
    gigabytes of WAL behind)."""
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )
        conn.execute("CHECKPOINT")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--only", action="append", choices=sorted(BENCHMARKS), help="run only these"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    names = [n for n in BENCHMARKS if not args.only or n in args.only]
    with embedded_server() as server:
        with psycopg.connect(server.url("postgres")) as conn:
            found = conn.execute("SHOW server_version").fetchone()
        version = f"PostgreSQL {found[0] if found else '?'} (embedded)"
        started = machine(version)
        rows = asyncio.run(run(server, names, quick=args.quick))
    print()
    print(f"Started {started}; load average {load_average():.2f} at the end.")
    if args.quick:
        print("Quick run: small sizes, the ratios are a smoke test, not the claims.")
    print()
    print(render(rows))
    raise SystemExit(0 if all(row.met for row in rows) else 1)


if __name__ == "__main__":
    main()
