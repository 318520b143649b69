"""The scheduler of this process on a committed database: a committed event wakes the deliverer
at once, also when it lands while the previous delivery run is still finishing; a scheduler that
stops hands its claimed deliveries back."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from typing import Any

import pytest
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.webhooks import EventType, WebhookEndpointCreate
from service.core import encryption, outbox
from service.core.auth import SYSTEM
from service.core.db import transaction
from service.core.settings import Settings
from service.integrations import webhook_endpoints
from service.integrations.webhook_delivery import PER_ENDPOINT
from service.jobs import state
from service.jobs.definitions import DELIVER_WEBHOOKS, JOBS
from service.jobs.scheduler import Scheduler, job_context
from tests.webhook_receiver import Receiver
from tests.webhooks_support import issued

# How long a test waits for a delivery: a bound on a hang, well under the hourly poll and the
# 60 s lease that the tests tell apart from a wake-up and a hand-back, not a speed requirement.
WITHIN = 45.0


@pytest.fixture
def factory(
    committing_factory: async_sessionmaker[AsyncSession],
) -> async_sessionmaker[AsyncSession]:
    return committing_factory


async def publish_one(factory: async_sessionmaker[AsyncSession]) -> None:
    """Commit one invoice.issued event."""
    async with transaction(factory) as db:
        await outbox.publish_many(db, EventType.invoice_issued, issued(1))


async def accepted(receiver: Receiver, count: int) -> None:
    """Until the receiver has accepted `count` requests (failing after WITHIN seconds)."""
    deadline = time.monotonic() + WITHIN
    while len(receiver.accepted()) < count:
        assert time.monotonic() < deadline, f"{count} deliveries did not arrive in {WITHIN} s"
        await asyncio.sleep(0.01)


async def test_an_event_committed_while_a_delivery_run_finishes_is_sent_without_waiting_a_poll(
    database_url: str,
    factory: async_sessionmaker[AsyncSession],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Only a wake-up can start a delivery run here: the poll comes once an hour.
    hourly = dataclasses.replace(
        JOBS[DELIVER_WEBHOOKS], trigger=lambda s: IntervalTrigger(hours=1, timezone=s.timezone)
    )
    monkeypatch.setitem(JOBS, DELIVER_WEBHOOKS, hourly)
    # Each delivery run is still on after its pass, while its outcome is recorded: the test
    # holds it there (each run hands the test a gate to open) while it commits an event.
    gates: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()
    holding = True
    record_run = state.record_run

    async def held_record_run(session_factory: Any, name: str, **details: Any) -> None:
        if name == DELIVER_WEBHOOKS and holding:
            gate = asyncio.get_running_loop().create_future()
            await gates.put(gate)
            await gate
        await record_run(session_factory, name, **details)

    async def next_run_recording() -> asyncio.Future[None]:
        return await asyncio.wait_for(gates.get(), WITHIN)

    monkeypatch.setattr(state, "record_run", held_record_run)
    async with transaction(factory) as db:
        endpoint = await webhook_endpoints.create(
            db,
            SYSTEM,
            WebhookEndpointCreate(url=receiver.url, events=["*"]),
            allow_private=True,
            keyring=encryption.keyring(Settings()),
        )
    receiver.secret = endpoint.secret
    settings = Settings(database_url=database_url, webhook_allow_private=True, scheduler=True)
    scheduler = Scheduler(job_context(settings, factory, None))
    await scheduler.start()
    try:
        (await next_run_recording()).set_result(None)  # it leads, and caught up on deliveries
        await publish_one(factory)
        await accepted(receiver, 1)  # woken by the commit: the poll is an hour away
        run_finishing = await next_run_recording()  # that run has sent it and now records

        await publish_one(factory)  # committed while that run is still on
        holding = False
        run_finishing.set_result(None)

        await accepted(receiver, 2)  # the wake-up during the run was not lost
        assert all(r.verified for r in receiver.accepted())
        assert len(receiver.ids_accepted()) == 2
    finally:
        await scheduler.stop()


async def test_a_stopping_scheduler_finishes_its_sends_and_gives_back_the_rest_for_the_next(
    database_url: str, factory: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    # Its first sends are held at the receiver until the scheduler has begun to stop.
    hold = receiver.hold = threading.Event()
    async with transaction(factory) as db:
        endpoint = await webhook_endpoints.create(
            db,
            SYSTEM,
            WebhookEndpointCreate(url=receiver.url, events=["*"]),
            allow_private=True,
            keyring=encryption.keyring(Settings()),
        )
        await outbox.publish_many(db, EventType.invoice_issued, issued(40))
    receiver.secret = endpoint.secret
    settings = Settings(database_url=database_url, webhook_allow_private=True, scheduler=True)
    first = Scheduler(job_context(settings, factory, None))
    await first.start()
    try:
        deadline = time.monotonic() + WITHIN
        while len(receiver.received) < PER_ENDPOINT:  # every slot of the endpoint is busy
            assert time.monotonic() < deadline, "the first sends did not arrive"
            await asyncio.sleep(0.01)
        stopping = asyncio.ensure_future(first.stop())
        await asyncio.sleep(0)  # stop() has begun: it claims and starts nothing more
    finally:
        hold.set()
    await stopping
    # It stopped while its first sends were being answered: it finished those and sent none of
    # the deliveries it had claimed ahead.
    sent_by_first = len(receiver.accepted())
    assert sent_by_first == PER_ENDPOINT

    async with factory() as db:
        rows = await db.execute(
            text(
                "SELECT d.status, d.next_attempt_at <= now() AS due, d.attempt_count,"
                " (SELECT count(*) FROM webhook_attempts AS a WHERE a.delivery_id = d.id) AS tried"
                " FROM webhook_deliveries AS d"
            )
        )
        deliveries = rows.all()
    # Nothing is left leased to the stopped process, and every attempt it made is recorded.
    assert sum(1 for d in deliveries if d.status == "succeeded") == sent_by_first
    assert all(d.due for d in deliveries if d.status == "pending")
    assert all(d.attempt_count == d.tried for d in deliveries)

    second = Scheduler(job_context(settings, factory, None))
    await second.start()
    try:
        await accepted(receiver, 40)  # at once: given back, not waiting out the 60 s lease
    finally:
        await second.stop()
    assert set(receiver.ids_accepted().values()) == {1}
    assert len(receiver.ids_accepted()) == 40
