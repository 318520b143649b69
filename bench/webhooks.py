"""Outbound webhooks end to end: events committed through the outbox, woken by NOTIFY, sent by
the real scheduler's deliverer to a fast receiver on loopback, timed against the same receiver
taking the same number of signed POSTs straight from an httpx client (no database) in the same
run.

Run by hand: `.venv/bin/python -m bench.webhooks [--events 10000 --batch 100 --rate 0]`. It
starts a throwaway embedded PostgreSQL (or uses DATABASE_URL: a scratch database, please),
migrates it, registers one endpoint for a receiver in a separate process (raw asyncio HTTP/1.1,
keep-alive, answers 204, records arrival time and webhook-id), then:

- baseline: N signed POSTs from one httpx.AsyncClient with the deliverer's concurrency for one
  endpoint (PER_ENDPOINT), first request to last answer;
- outbox: a publisher process commits N events with `outbox.publish_many` (`--batch` per
  transaction, as fast as it can or at `--rate` events/s) while a `Scheduler` leads in this
  process; first commit to last receipt, and per event receipt minus its batch's commit time.

Then it checks that N distinct webhook-ids arrived once each, every signature verifies with
`standardwebhooks`, and every delivery is 'succeeded' with one attempt. Everything talks over
127.0.0.1 (and PostgreSQL's Unix socket). Goal: at least 500 events/s on a 2-core machine,
with commit-to-receipt p99 under 2 s at that rate. `measure()` (run by `make bench`) returns
both as rows: throughput flat out, latency with `--rate 500`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

from pydantic import BaseModel
from sqlalchemy import text
from standardwebhooks import Webhook

from bench.scratch import scratch_database
from bench.table import Row, ms
from models.webhooks import EventType, WebhookEndpointCreate
from service.core import encryption, migrate, outbox, process
from service.core.auth import SYSTEM
from service.core.db import make_async_engine, make_session_factory, transaction
from service.core.settings import Settings
from service.integrations import address_guard, webhook_endpoints
from service.integrations.webhook_delivery import PER_ENDPOINT, TIMEOUT, body_of, signed_headers
from service.integrations.webhook_endpoints import webhook_id
from service.jobs.scheduler import Scheduler, job_context

GOAL = 500.0  # events/s end to end
GOAL_P99_S = 2.0  # commit to receipt
WARMUP = 200
# (arrival time.monotonic(), lower-cased headers, body): CLOCK_MONOTONIC is system-wide on
# Linux, so the receiver's and the publisher's clocks compare directly.
Record = tuple[float, dict[str, str], bytes]


class BenchResource(BaseModel):
    """A resource of about the size of an invoice as finance reads it."""

    batch: int
    index: int
    id: uuid.UUID
    organization_id: uuid.UUID
    number: str
    currency: str = "CAD"
    status: str = "open"
    subtotal_cents: int = 150_000
    tax_cents: int = 7_500
    total_cents: int = 157_500
    period_start: str = "2027-01-01"
    period_end: str = "2027-01-31"
    memo: str = "Group music therapy, January: 10 sessions of 60 minutes at the school."


def resources(batch: int, count: int, start: int) -> list[BenchResource]:
    org = uuid.uuid4()
    return [
        BenchResource(
            batch=batch, index=i, id=uuid.uuid4(), organization_id=org, number=f"INV-{i:06d}"
        )
        for i in range(start, start + count)
    ]


# --- the receiver (its own process) -------------------------------------------------------


class _Store:
    def __init__(self, control: Connection) -> None:
        self.records: list[Record] = []
        self.open = 0  # connections open now
        self.peak = 0  # most connections open at once since the last reset
        self.expect = 0
        self.control = control

    def add(self, headers: dict[str, str], body: bytes) -> None:
        now = time.monotonic()
        self.records.append((now, headers, body))
        if self.expect and len(self.records) == self.expect:
            self.control.send(("reached", now))


class _Hooks(asyncio.Protocol):
    """Just enough HTTP/1.1 for POSTs with a content-length, kept alive, answered 204."""

    def __init__(self, store: _Store) -> None:
        self.store = store
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.store.open += 1
        self.store.peak = max(self.store.peak, self.store.open)

    def connection_lost(self, exc: Exception | None) -> None:
        self.store.open -= 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            lines = self.buffer[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            size = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + size:
                return
            body = self.buffer[end + 4 : end + 4 + size]
            self.buffer = self.buffer[end + 4 + size :]
            self.store.add(headers, body)
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")


def receiver_main(control: Connection) -> None:
    async def serve() -> None:
        loop = asyncio.get_running_loop()
        store = _Store(control)
        server = await loop.create_server(lambda: _Hooks(store), "127.0.0.1", 0, backlog=512)
        control.send(("port", server.sockets[0].getsockname()[1]))
        stopped = loop.create_future()

        def command() -> None:
            what, arg = control.recv()
            if what == "reset":
                store.records, store.peak, store.expect = [], store.open, arg
                control.send(("ok", None))
            elif what == "dump":
                control.send(("records", (store.records, store.peak)))
            elif what == "stop":
                stopped.set_result(None)

        loop.add_reader(control.fileno(), command)
        await stopped
        server.close()

    asyncio.run(serve())


async def receive(control: Connection, wait_s: float | None = None) -> tuple[str, Any]:
    """The next message on a pipe, without blocking the event loop."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(control.fileno(), readable)
    try:
        if not control.poll():
            await asyncio.wait_for(ready, wait_s)
    finally:
        loop.remove_reader(control.fileno())
        os.set_blocking(control.fileno(), True)  # uvloop's add_reader left it non-blocking
    message: tuple[str, Any] = control.recv()
    return message


class Receiver:
    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.control, child = ctx.Pipe()
        self.process = ctx.Process(target=receiver_main, args=(child,), daemon=True)
        self.process.start()
        if not self.control.poll(60):
            raise RuntimeError("the receiver did not start")
        what, port = self.control.recv()
        assert what == "port"
        self.url = f"http://127.0.0.1:{port}/hooks"

    def reset(self, expect: int) -> None:
        """Forget what arrived; say ("reached", time) when `expect` requests have arrived."""
        self.control.send(("reset", expect))
        assert self.control.recv()[0] == "ok"

    def records(self) -> tuple[list[Record], int]:
        """What arrived since the last reset, and the most connections open at once."""
        self.control.send(("dump", None))
        what, (records, connections) = self.control.recv()
        assert what == "records"
        return list(records), connections

    def stop(self) -> None:
        self.control.send(("stop", None))
        self.process.join(5)


# --- the publisher (its own process, like the API processes that commit events) ------------


def publisher_main(url: str, events: int, batch: int, rate: float, control: Connection) -> None:
    async def publish() -> list[float]:
        engine = make_async_engine(url, pool_size=1)
        factory = make_session_factory(engine)
        batches = [
            resources(b, min(batch, events - b * batch), b * batch)
            for b in range(-(-events // batch))
        ]
        async with factory() as db:  # connect before the clock starts
            await db.execute(text("SELECT 1"))
        control.send(("ready", None))
        assert control.recv()[0] == "go"
        committed = []
        began = time.monotonic()
        for number, items in enumerate(batches):
            if rate:
                await asyncio.sleep(max(0.0, began + number * batch / rate - time.monotonic()))
            async with transaction(factory) as db:
                await outbox.publish_many(db, EventType.invoice_issued, items)
            committed.append(time.monotonic())
        await engine.dispose()
        return committed

    control.send(("done", asyncio.run(publish())))


# --- the runs -----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def baseline(
    receiver: Receiver, events: int, concurrency: int, secret: str
) -> tuple[float, int]:
    """Events/s of the same receiver fed signed POSTs straight from httpx (no database), and the
    most connections it had open at once."""
    client = address_guard.webhook_client(allow_private=True, timeout=TIMEOUT)
    created = datetime.now(UTC)
    bodies = [
        body_of(EventType.invoice_issued.value, created, r.model_dump(mode="json"))
        for r in resources(0, events, 0)
    ]

    async def post(body: bytes) -> None:
        msg_id = webhook_id(uuid.uuid4())
        timestamp = int(time.time())
        headers = signed_headers([secret], msg_id, timestamp, body)
        async with client.stream("POST", receiver.url, content=body, headers=headers) as answer:
            assert answer.status_code == 204
            async for _ in answer.aiter_raw():
                pass

    async def worker(queue: list[bytes]) -> None:
        while queue:
            await post(queue.pop())

    async def send_all(all_bodies: list[bytes]) -> float:
        queue = list(all_bodies)
        began = time.monotonic()
        await asyncio.gather(*(worker(queue) for _ in range(concurrency)))
        return time.monotonic() - began

    try:
        receiver.reset(0)
        await send_all(bodies[:WARMUP])
        receiver.reset(events)
        elapsed = await send_all(bodies)
        assert (await receive(receiver.control, 10))[0] == "reached"
        records, connections = receiver.records()
        assert len(records) == events
    finally:
        await client.aclose()
    return events / elapsed, connections


async def wait_delivered(
    factory: Any, endpoint_id: uuid.UUID, expected: int, wait_s: float
) -> dict[str, int]:
    """Deliveries to the endpoint by status, once `expected` succeeded (or time runs out)."""
    deadline = time.monotonic() + wait_s
    while True:
        async with factory() as db:
            rows = await db.execute(
                text(
                    "SELECT status, count(*) FROM webhook_deliveries "
                    "WHERE endpoint_id = :e GROUP BY status"
                ),
                {"e": endpoint_id},
            )
            by_status = {status: int(count) for status, count in rows.all()}
        if by_status.get("succeeded", 0) >= expected or time.monotonic() > deadline:
            return by_status
        await asyncio.sleep(0.05)


async def commits(factory: Any) -> int:
    """Transactions committed in the database so far, by every process."""
    async with factory() as db:
        count = await db.execute(
            text("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        )
        return int(count.scalar_one())


async def outbox_run(url: str, receiver: Receiver, args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings(database_url=url, webhook_allow_private=True, scheduler=True)
    engine = make_async_engine(url, pool_size=settings.db_pool_size)
    factory = make_session_factory(engine)
    async with transaction(factory) as db:
        others = (
            await db.execute(
                text("SELECT count(*) FROM webhook_endpoints WHERE deleted_at IS NULL")
            )
        ).scalar_one()
        if others:
            print(f"warning: {others} other live endpoints also get these events")
        endpoint = await webhook_endpoints.create(
            db,
            SYSTEM,
            WebhookEndpointCreate(url=receiver.url, events=["*"]),
            allow_private=True,
            keyring=encryption.keyring(settings),
        )
    scheduler = Scheduler(job_context(settings, factory, None))
    await scheduler.start()
    process.settle_after_startup()  # as `ensemble worker` and `ensemble serve` do
    ctx = multiprocessing.get_context("spawn")
    control, child = ctx.Pipe()
    publisher = ctx.Process(
        target=publisher_main,
        args=(url, args.events, args.batch, args.rate, child),
        daemon=True,
    )
    publisher.start()
    try:
        while not scheduler.is_leader:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        # Warm up: the deliverer's pool, connections to the receiver, prepared plans.
        receiver.reset(WARMUP)
        async with transaction(factory) as db:
            await outbox.publish_many(db, EventType.invoice_issued, resources(-1, WARMUP, 0))
        what, _ = await receive(receiver.control, 30)
        assert what == "reached", "the warm-up events never arrived"
        await wait_delivered(factory, endpoint.id, WARMUP, 10)
        assert (await receive(control, 60))[0] == "ready"
        receiver.reset(args.events)
        load = os.getloadavg()[0]
        commits_before = await commits(factory)
        control.send(("go", None))
        try:
            what, last_receipt = await receive(receiver.control, args.timeout)
        except TimeoutError:
            last_receipt = None
        what, committed = await receive(control, 60)
        assert what == "done"
        by_status = await wait_delivered(factory, endpoint.id, WARMUP + args.events, 10)
        await asyncio.sleep(1.5)  # other backends report their counts within a second
        transactions = await commits(factory) - commits_before
        async with factory() as db:
            attempts = (
                await db.execute(
                    text(
                        "SELECT count(*), max(attempt) FROM webhook_attempts a "
                        "JOIN webhook_deliveries d ON d.id = a.delivery_id "
                        "WHERE d.endpoint_id = :e"
                    ),
                    {"e": endpoint.id},
                )
            ).one()
    finally:
        publisher.join(10)
        await scheduler.stop()
        async with transaction(factory) as db:  # a DATABASE_URL stays clean of it
            await webhook_endpoints.delete(db, SYSTEM, endpoint.id)
        await engine.dispose()
    return {
        "load": load,
        "secret": endpoint.secret,
        "committed": committed,
        "last_receipt": last_receipt,
        "by_status": by_status,
        "attempts": (int(attempts[0]), attempts[1]),
        "transactions": transactions,
    }


@dataclass(frozen=True)
class Summary:
    ok: bool  # every event arrived once, signed, delivered in one attempt
    rate: float  # events/s, first commit to last receipt
    base_rate: float  # events/s, httpx straight to the receiver
    p50_s: float  # commit to receipt
    p99_s: float


def report(
    args: argparse.Namespace,
    base: tuple[float, int],
    run: dict[str, Any],
    records: list[Record],
) -> Summary:
    base_rate, base_connections = base
    committed: list[float] = run["committed"]
    ids = Counter(headers.get("webhook-id", "") for _, headers, _ in records)
    duplicates = sum(n - 1 for n in ids.values() if n > 1)
    hook = Webhook(run["secret"])
    unverified = 0
    latencies = []
    for at, headers, body in records:
        try:
            payload = hook.verify(body, headers)
        except Exception:
            unverified += 1
            continue
        latencies.append(at - committed[payload["data"]["batch"]])
    last = run["last_receipt"] or max((at for at, _, _ in records), default=committed[-1])
    elapsed = last - committed[0]
    rate = len(ids) / elapsed
    publish_s = committed[-1] - committed[0]
    expected_rows = WARMUP + args.events
    by_status = run["by_status"]
    ok = (
        len(ids) == args.events
        and duplicates == 0
        and unverified == 0
        and by_status.get("succeeded", 0) == expected_rows == sum(by_status.values())
        and run["attempts"] == (expected_rows, 1)
    )
    pace = f"at {args.rate:.0f} events/s" if args.rate else "as fast as possible"
    if args.rate:
        verdict = "paced: throughput is the --rate, see the latencies"
    else:
        verdict = f"goal {GOAL:.0f}: {'met' if rate >= GOAL else 'MISSED'}"
    print(
        f"machine:  {os.cpu_count()} CPUs, load average {run['load']:.2f} when the outbox run "
        "began (other work on the machine skews both runs)"
    )
    print(
        f"baseline: httpx -> receiver, {args.concurrency} in flight   {base_rate:8.0f} events/s"
        f"   ({base_connections} connections)"
    )
    print(
        f"outbox:   {args.events} events, {args.batch}/commit {pace}, committed in "
        f"{publish_s:.2f} s ({args.events / publish_s if publish_s else 0:.0f} events/s)"
    )
    print(
        f"          first commit -> last receipt {elapsed:6.2f} s   {rate:8.0f} events/s   "
        f"x{rate / base_rate:.2f} of baseline   ({run['connections']} connections)   {verdict}"
    )
    if latencies:
        print(
            f"          commit -> receipt  p50 {percentile(latencies, 50) * 1000:7.1f} ms   "
            f"p99 {percentile(latencies, 99) * 1000:7.1f} ms   "
            f"max {max(latencies) * 1000:7.1f} ms   "
            f"mean {statistics.fmean(latencies) * 1000:7.1f} ms"
        )
    print(
        f"          {run['transactions']} transactions in the database "
        f"({run['transactions'] / args.events:.2f} per event, publishing included)"
    )
    print(
        f"checks:   {len(ids)} distinct webhook-ids (want {args.events}), {duplicates} duplicates,"
        f" {unverified} bad signatures; deliveries {json.dumps(by_status)}, "
        f"attempts {run['attempts'][0]} (max attempt {run['attempts'][1]}) "
        f"incl. {WARMUP} warm-up: {'OK' if ok else 'FAILED'}",
        flush=True,
    )
    return Summary(
        ok=ok,
        rate=rate,
        base_rate=base_rate,
        p50_s=percentile(latencies, 50) if latencies else float("inf"),
        p99_s=percentile(latencies, 99) if latencies else float("inf"),
    )


async def run(url: str, args: argparse.Namespace) -> Summary:
    migrate.upgrade(url)
    receiver = Receiver()
    try:
        probe_secret = webhook_endpoints.new_secret()
        base = await baseline(receiver, args.events, args.concurrency, probe_secret)
        outcome = await outbox_run(url, receiver, args)
        records, outcome["connections"] = receiver.records()
    finally:
        receiver.stop()
    return report(args, base, outcome, records)


async def measure(url: str, *, quick: bool = False) -> list[Row]:
    """Throughput of 10,000 events (quick: 1,000) published flat out in transactions of 100;
    then commit-to-receipt latency with the same events published at the goal's rate (flat
    out, the latency would only say how long the backlog took to drain)."""
    events = "1000" if quick else "10000"
    flat_out = await run(url, parser().parse_args(["--events", events]))
    paced = await run(url, parser().parse_args(["--events", events, "--rate", f"{GOAL:g}"]))
    checks = "" if flat_out.ok and paced.ok else " (delivery checks FAILED)"
    return [
        Row(
            claim=f"webhook delivery, {int(events):,} events outbox -> receiver{checks}",
            measured=f"{flat_out.rate:,.0f} events/s",
            baseline=f"httpx -> receiver {flat_out.base_rate:,.0f} events/s",
            ratio=flat_out.rate / flat_out.base_rate,
            goal=f">= {GOAL:.0f} events/s",
            met=flat_out.ok and flat_out.rate >= GOAL,
        ),
        Row(
            claim=f"webhook commit-to-receipt at {GOAL:.0f} events/s, p99",
            measured=f"p99 {ms(paced.p99_s)} (p50 {ms(paced.p50_s)})",
            baseline=f"the goal {ms(GOAL_P99_S)}",
            ratio=paced.p99_s / GOAL_P99_S,
            goal="p99 < 2 s",
            met=paced.ok and paced.p99_s < GOAL_P99_S,
        ),
    ]


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100, help="events per transaction")
    parser.add_argument("--rate", type=float, default=0, help="events/s to publish; 0: flat out")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=PER_ENDPOINT,
        help="baseline requests in flight (default: the deliverer's limit per endpoint)",
    )
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for receipt")
    return parser


def main() -> None:
    args = parser().parse_args()
    logging.basicConfig(level=logging.WARNING)
    with scratch_database(os.environ.get("DATABASE_URL")) as url:
        ok = asyncio.run(run(url, args)).ok
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
