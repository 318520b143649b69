"""A well-behaved client's latency while others abuse the server, as ratios to a quiet run.

Run by hand: `.venv/bin/python bench/abuse.py [--seconds S] [--drippers N]`. It starts a
throwaway embedded PostgreSQL and the real server (`ensemble serve`, one worker, on
127.0.0.1), then measures `GET /v1/me` from one client (sequential requests) in four phases:

- quiet: nobody else;
- slow bodies: N clients each start a POST body and send one byte a second;
- large bodies: clients sending 8 MiB bodies in a loop (each refused with 413);
- rate-limit flood: clients hammering without a key from the same address (429s).

For each phase it prints p50 and p99 and their ratio to the quiet phase, and the server's
resident memory before and after. Rate limits need Redis on 127.0.0.1:6379 (as on the
development machines); without it the flood phase runs unlimited, and says so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.scratch import scratch_database
from service import bootstrap
from service.core import migrate
from service.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def measure(url: str, key: str, seconds: float) -> tuple[float, float, int]:
    """p50 and p99 (ms) of sequential GET /v1/me for `seconds`, and the count."""
    samples = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.perf_counter()
            response = await http.get("/v1/me", headers={"Authorization": f"Bearer {key}"})
            samples.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.text
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1], len(samples)


async def drip(port: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /v1/organizations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                b"\r\nContent-Length: 1000\r\n\r\n"
            )
            while not stop.is_set() and not reader.at_eof():
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(1)
            writer.close()


async def large(url: str, stop: asyncio.Event) -> None:
    body = b"x" * (8 * 1024 * 1024)
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                await http.post("/v1/organizations", content=body)


async def flood(url: str, stop: asyncio.Event, counts: dict[int, int]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                status = (await http.get("/v1/me")).status_code
                counts[status] = counts.get(status, 0) + 1


async def phase(
    name: str,
    url: str,
    key: str,
    seconds: float,
    abusers: list,
    quiet: tuple[float, float] | None,
) -> tuple[float, float]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(a(stop)) for a in abusers]
    await asyncio.sleep(1 if abusers else 0)
    p50, p99, n = await measure(url, key, seconds)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    base50, base99 = quiet or (p50, p99)
    ratios = f"x{p50 / base50:5.2f}  x{p99 / base99:5.2f}"
    print(f"{name:28s} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms   {ratios}   ({n} requests)")
    return p50, p99


async def run(args: argparse.Namespace, database_url: str) -> None:
    migrate.upgrade(database_url)
    settings = Settings(database_url=database_url)
    key = await bootstrap.create_key(settings, role="admin", name="abuse bench")
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "ENSEMBLE_RATE_LIMIT": "100000/minute",
        "ENSEMBLE_RATE_LIMIT_ANONYMOUS": "600/minute",
        "ENSEMBLE_RATE_LIMIT_PREFIX": f"abuse-bench-{port}",
    }
    server = subprocess.Popen(  # noqa: ASYNC220 (started once, before any measurement)
        [sys.executable, "-m", "service.cli", "serve", "--no-scheduler", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            for _ in range(200):
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        before = rss_mib(server.pid)
        print(f"server RSS before: {before:.0f} MiB")
        quiet = await phase("quiet", url, key, args.seconds, [], None)
        await phase(
            f"{args.drippers} slow bodies",
            url,
            key,
            args.seconds,
            [lambda stop: drip(port, stop) for _ in range(args.drippers)],
            quiet,
        )
        await phase(
            "8 x 8 MiB bodies (413)",
            url,
            key,
            args.seconds,
            [lambda stop: large(url, stop) for _ in range(8)],
            quiet,
        )
        counts: dict[int, int] = {}
        await phase(
            "anonymous flood (429)",
            url,
            key,
            args.seconds,
            [lambda stop: flood(url, stop, counts) for _ in range(8)],
            quiet,
        )
        print(f"flood answers by status: {dict(sorted(counts.items()))}")
        print(
            f"server RSS after: {rss_mib(server.pid):.0f} MiB (+{rss_mib(server.pid) - before:.0f})"
        )
    finally:
        server.terminate()
        server.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--drippers", type=int, default=50)
    args = parser.parse_args()
    with scratch_database(name="abuse") as url:
        asyncio.run(run(args, url))


if __name__ == "__main__":
    main()
