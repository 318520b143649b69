"""Webhook attempts are bounded: a receiver that answers a byte at a time is cut off at the
attempt deadline (retried later, never sent twice at once), and while slow attempts are still
open, a new event for a healthy endpoint is picked up and sent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from models.webhooks import EventType
from service.core import encryption, outbox
from service.core.settings import Settings
from service.integrations import webhook_delivery
from service.integrations.webhook_delivery import Deliverer
from tests.support import Api, ok
from tests.webhook_receiver import Receiver
from tests.webhooks_support import deliveries, issued, subscribe


@dataclass
class DripReceiver:
    """Reads a request, then answers 200 one byte every 0.1 s, forever."""

    port: int = 0
    requests: int = 0
    open_now: int = 0
    arrivals: list[float] = field(default_factory=list)
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    server: asyncio.Server | None = None

    async def start(self) -> DripReceiver:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.requests += 1
        self.open_now += 1
        self.arrivals.append(time.monotonic())
        self.opened.set()
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            while True:
                writer.write(b".")
                await writer.drain()
                await asyncio.sleep(0.1)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open_now -= 1
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest_asyncio.fixture
async def drip() -> AsyncIterator[DripReceiver]:
    receiver = await DripReceiver().start()
    yield receiver
    await receiver.stop()


def _deliverer(connection: AsyncConnection, deadline: float, slots: int = 8) -> Deliverer:
    factory = async_sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    return Deliverer(
        factory,
        allow_private=True,
        retry_delays=(timedelta(hours=1),),
        keyring=encryption.keyring(Settings()),
        attempt_deadline=deadline,
        per_endpoint=slots,
    )


async def _endpoint(api: Api, url: str) -> dict:
    body = {"url": url, "events": [EventType.invoice_issued.value]}
    endpoint: dict = ok(
        await api.client.post("/v1/webhook-endpoints", json=body, headers=api.admin), 201
    )
    return endpoint


async def test_a_dripping_receiver_is_cut_off_at_the_deadline_and_retried_later(
    api: Api, db: AsyncSession, connection: AsyncConnection, drip: DripReceiver
):
    endpoint = await _endpoint(api, drip.url)
    await outbox.publish_many(db, EventType.invoice_issued, issued(1))
    await db.commit()
    deliverer = _deliverer(connection, deadline=0.5)
    try:
        report = await deliverer.deliver_due()
    finally:
        await deliverer.aclose()
    assert report.as_dict() == {"sent": 0, "retried": 1, "failed": 0}
    assert drip.requests == 1  # one attempt, never a second one at the same time
    [delivery] = await deliveries(api, endpoint["id"])
    assert (delivery["status"], delivery["attempt_count"]) == ("pending", 1)
    assert delivery["last_error"] == "timed out (no whole answer within 0.5 s)"
    assert delivery["last_status_code"] is None


async def test_a_healthy_endpoints_new_event_is_sent_while_slow_attempts_are_still_open(
    api: Api,
    db: AsyncSession,
    connection: AsyncConnection,
    drip: DripReceiver,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
):
    # Only a wake-up (as a committed event gives) may make the pass look again, so the test
    # knows the database is idle while it publishes.
    monkeypatch.setattr(webhook_delivery, "POLL_WHILE_SENDING", 3600.0)
    for _ in range(3):
        await _endpoint(api, drip.url)
    await outbox.publish_many(db, EventType.invoice_issued, issued(1))  # to the three slow
    await db.commit()
    deliverer = _deliverer(connection, deadline=30.0)
    sending = asyncio.create_task(deliverer.deliver_due())
    try:
        while drip.open_now < 3:
            await asyncio.wait_for(drip.opened.wait(), 10)
            drip.opened.clear()
        await subscribe(api, receiver, [EventType.invoice_paid.value])
        await outbox.publish_many(db, EventType.invoice_paid, issued(1))
        await db.commit()
        deliverer.poke()
        while not receiver.accepted():
            assert not sending.done()
            await asyncio.sleep(0.05)
        assert drip.open_now == 3  # the slow attempts are all still open
        [got] = receiver.accepted()
        assert got.payload["type"] == "invoice.paid"
    finally:
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        await deliverer.aclose()


async def test_a_slow_endpoint_holds_no_more_than_its_slots(
    api: Api, db: AsyncSession, connection: AsyncConnection, drip: DripReceiver
):
    await _endpoint(api, drip.url)
    await outbox.publish_many(db, EventType.invoice_issued, issued(5))
    await db.commit()
    deliverer = _deliverer(connection, deadline=0.3, slots=2)
    try:
        report = await deliverer.deliver_due()
    finally:
        await deliverer.aclose()
    assert report.as_dict() == {"sent": 0, "retried": 5, "failed": 0}
    assert drip.requests == 5
    # Two slots: each attempt after the second starts only once one of the two before it has
    # ended, at its deadline (seen from the receiver: an attempt's clock starts a connect
    # before its arrival, hence the margin; with more slots they would all arrive at once).
    starts = drip.arrivals
    assert all(starts[i] - starts[i - 2] >= 0.25 for i in range(2, 5)), starts
