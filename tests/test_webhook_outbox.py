"""Events are written with the change that causes them, and delivered signed (Standard
Webhooks), with one webhook-id per event and endpoint across every attempt."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from models.webhooks import EventType
from service.core import encryption, outbox
from service.core.db import make_async_engine, make_session_factory
from service.core.settings import Settings
from service.integrations import webhook_delivery
from service.integrations.webhook_delivery import PER_ENDPOINT, Claimed, Deliverer
from tests.concurrency_support import PATIENCE_SECONDS
from tests.conftest import LiveServer
from tests.programs_support import confirmed_program, make_program, sessions_of
from tests.support import ALL_WEEK, Api, ok, problem
from tests.webhook_receiver import Receiver
from tests.webhooks_support import deliveries, issued, subscribe


async def test_a_confirmed_program_reaches_the_receiver_signed_with_the_program_as_finance_sees_it(
    api: Api, receiver: Receiver, deliverer: Deliverer
) -> None:
    await subscribe(api, receiver)
    org = await api.make_org()
    offering = await api.make_offering()
    therapist = await api.make_therapist(availability=ALL_WEEK)
    program = await confirmed_program(api, org, offering, therapist)

    report = await deliverer.deliver_due()

    got = sorted(receiver.accepted(), key=lambda r: r.payload["type"], reverse=True)
    assert [r.payload["type"] for r in got] == ["program.requested", "program.confirmed"]
    assert all(r.verified for r in got)
    confirmed = got[1].payload
    assert confirmed["data"] == ok(
        await api.client.get(f"/v1/programs/{program['id']}", headers=api.admin)
    )
    assert set(confirmed) == {"type", "timestamp", "data"}
    assert report.as_dict() == {"sent": 2, "retried": 0, "failed": 0}


async def test_a_receiver_failing_its_first_attempts_gets_the_same_webhook_id_each_time(
    api: Api, receiver: Receiver, deliverer: Deliverer
) -> None:
    receiver.fail_first = 2
    endpoint = await subscribe(api, receiver, ["program.requested"])
    org = await api.make_org()
    await make_program(api, org, await api.make_offering())

    await deliverer.deliver_due()

    ids = [r.webhook_id for r in receiver.received]
    assert len(ids) == 3 and len(set(ids)) == 1
    assert [r.answered for r in receiver.received] == [500, 500, 204]
    [delivery] = await deliveries(api, endpoint["id"])
    assert delivery["webhook_id"] == ids[0]
    assert delivery["status"] == "succeeded"
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 204]


async def test_a_request_that_fails_with_a_conflict_emits_nothing(
    api: Api, receiver: Receiver, deliverer: Deliverer
) -> None:
    endpoint = await subscribe(api, receiver)
    org = await api.make_org()
    therapist = await api.make_therapist(availability=ALL_WEEK)
    program = await confirmed_program(api, org, await api.make_offering(), therapist)
    session = (await sessions_of(api, program["id"]))[0]
    ok(await api.client.post(f"/v1/sessions/{session['id']}/cancel", headers=api.admin, json={}))
    await deliverer.deliver_due()
    before = len(await deliveries(api, endpoint["id"]))

    again = await api.client.post(
        f"/v1/sessions/{session['id']}/cancel", headers=api.admin, json={}
    )
    problem(again, 409)
    await deliverer.deliver_due()

    assert len(await deliveries(api, endpoint["id"])) == before
    assert [r.payload["type"] for r in receiver.accepted()].count("session.cancelled") == 1


async def test_an_endpoint_gets_only_the_events_it_subscribed_to(
    api: Api, receiver: Receiver, deliverer: Deliverer
) -> None:
    await subscribe(api, receiver, ["program.confirmed"])
    org = await api.make_org()
    therapist = await api.make_therapist(availability=ALL_WEEK)
    await confirmed_program(api, org, await api.make_offering(), therapist)
    await deliverer.deliver_due()
    assert [r.payload["type"] for r in receiver.accepted()] == ["program.confirmed"]


async def test_a_redirect_is_a_failed_attempt_and_is_not_followed(
    api: Api, receiver: Receiver, deliverer: Deliverer
) -> None:
    receiver.status = 307
    endpoint = await subscribe(api, receiver, ["program.requested"])
    await make_program(api, await api.make_org(), await api.make_offering())

    await deliverer.deliver_due()

    [delivery] = await deliveries(api, endpoint["id"])
    assert delivery["status"] == "failed"
    assert [a["status_code"] for a in delivery["attempts"]] == [307, 307, 307, 307]
    assert len(receiver.received) == 4  # one request per attempt: nothing followed a Location


def _sample(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
    found = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(found[0].split()[-1]) if found else 0.0


async def test_metrics_count_sent_retried_and_failed_deliveries(
    api: Api, receiver: Receiver, deliverer: Deliverer
) -> None:
    before = (await api.client.get("/metrics")).text
    receiver.fail_first = 1
    await subscribe(api, receiver, ["program.requested"])
    await make_program(api, await api.make_org(), await api.make_offering())

    await deliverer.deliver_due()

    after = (await api.client.get("/metrics")).text
    counter = "ensemble_webhook_deliveries_total"
    for result, more in (("sent", 1), ("retried", 1), ("failed", 0)):
        grown = _sample(after, counter, result=result) - _sample(before, counter, result=result)
        assert grown == more, result
    # The pass ends when a claim finds nothing due: the gauge then reads 0 (idle).
    assert _sample(after, "ensemble_outbox_lag_seconds") == 0.0


# Bursts: a few attempts in flight per endpoint, more claimed and queued behind them.


async def publish_burst(db: AsyncSession, count: int) -> None:
    """`count` invoice.issued events committed at once, as an invoice run would."""
    await outbox.publish_many(db, EventType.invoice_issued, issued(count))
    await db.commit()


async def test_a_burst_to_one_endpoint_goes_a_few_at_a_time_each_event_once_in_one_pass(
    api: Api, receiver: Receiver, deliverer: Deliverer, db: AsyncSession
) -> None:
    # The receiver answers only when PER_ENDPOINT requests are in flight at once: a deliverer
    # sending fewer at a time would get 503s (and retries); one sending more would be seen.
    receiver.together = PER_ENDPOINT
    endpoint = await subscribe(api, receiver, ["invoice.issued"])
    await publish_burst(db, 5 * PER_ENDPOINT)

    report = await deliverer.deliver_due()

    assert report.as_dict() == {"sent": 5 * PER_ENDPOINT, "retried": 0, "failed": 0}
    assert receiver.most_in_flight == PER_ENDPOINT
    ids = receiver.ids_accepted()
    assert len(ids) == 5 * PER_ENDPOINT and set(ids.values()) == {1}
    numbers = sorted(r.payload["data"]["number"] for r in receiver.accepted())
    assert numbers == list(range(5 * PER_ENDPOINT))
    logged = await deliveries(api, endpoint["id"])
    assert {d["status"] for d in logged} == {"succeeded"}
    assert {tuple(a["attempt"] for a in d["attempts"]) for d in logged} == {(1,)}


async def test_a_delivery_queued_too_long_is_given_back_unsent_and_later_sent_as_attempt_one(
    api: Api,
    receiver: Receiver,
    deliverer: Deliverer,
    db: AsyncSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The first attempts take longer than a queued delivery may wait to start, so the ones
    # claimed behind them go back unsent and are claimed again.
    monkeypatch.setattr(webhook_delivery, "START_WITHIN", timedelta(seconds=0.1))
    receiver.delay = 0.3
    claims: list[uuid.UUID] = []
    claim = deliverer._claim

    async def counted(*args: Any) -> tuple[list[Claimed], bool]:
        claimed, more = await claim(*args)
        claims.extend(item.delivery_id for item in claimed)
        return claimed, more

    monkeypatch.setattr(deliverer, "_claim", counted)
    endpoint = await subscribe(api, receiver, ["invoice.issued"])
    await publish_burst(db, PER_ENDPOINT + 3)

    report = await deliverer.deliver_due()

    assert report.as_dict() == {"sent": PER_ENDPOINT + 3, "retried": 0, "failed": 0}
    assert len(claims) > len(set(claims)) == PER_ENDPOINT + 3  # some were claimed twice
    assert set(receiver.ids_accepted().values()) == {1}
    logged = await deliveries(api, endpoint["id"])
    assert len(logged) == PER_ENDPOINT + 3
    assert {tuple(a["attempt"] for a in d["attempts"]) for d in logged} == {(1,)}


async def test_a_receiver_that_closes_idle_connections_gets_the_next_event_at_the_first_attempt(
    api: Api, deliverer: Deliverer, db: AsyncSession
) -> None:
    # The deliverer keeps connections alive; a server may close one while it is idle. Sending
    # on it anyway would fail the attempt, so the pool must notice and connect afresh.
    bodies: list[bytes] = []

    async def answer_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        bodies.append(await reader.readexactly(length))
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()

    server = await asyncio.start_server(answer_then_close, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    body = {"url": f"http://127.0.0.1:{port}/hooks", "events": ["invoice.issued"]}
    ok(await api.client.post("/v1/webhook-endpoints", json=body, headers=api.admin), 201)
    try:
        await publish_burst(db, 1)
        assert (await deliverer.deliver_due()).as_dict()["sent"] == 1
        await asyncio.sleep(0.2)  # the receiver has closed that connection by now

        await publish_burst(db, 1)
        report = await deliverer.deliver_due()

        assert report.as_dict() == {"sent": 1, "retried": 0, "failed": 0}
        assert len(bodies) == 2
    finally:
        server.close()
        await server.wait_closed()


async def test_a_delivery_claimed_by_one_deliverer_is_skipped_by_another_on_its_own_connection(
    live_server: LiveServer,
    committing_factory: async_sessionmaker[AsyncSession],
    receiver: Receiver,
    settings: Settings,
    database_url: str,
) -> None:
    """Deliverer A claims one of two due deliveries and keeps its claim's transaction open
    (as if it stalled mid-claim). Deliverer B, with its own engine and so its own connection,
    sends the other one and skips the row A holds: without SKIP LOCKED it would wait for A's
    lock (and the bounded wait below fails) or send the same event twice."""
    admin = await live_server.admin_key()
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as client:
        endpoint = ok(
            await client.post(
                "/v1/webhook-endpoints",
                json={"url": receiver.url, "events": ["invoice.issued"]},
                headers=admin,
            ),
            201,
        )
    receiver.secret = endpoint["secret"]
    async with committing_factory() as db:
        await publish_burst(db, 2)
        numbered = {
            row[0]: row[1]
            for row in await db.execute(
                text(
                    "SELECT d.id, (e.data->>'number')::int FROM webhook_deliveries d "
                    "JOIN webhook_events e ON e.id = d.event_id"
                )
            )
        }
    assert sorted(numbered.values()) == [0, 1]

    def own_deliverer() -> tuple[Deliverer, AsyncEngine]:
        engine = make_async_engine(database_url)
        made = Deliverer(
            make_session_factory(engine),
            allow_private=True,
            retry_delays=(timedelta(0),) * 3,
            keyring=encryption.keyring(settings),
        )
        return made, engine

    (first, first_engine), (second, second_engine) = own_deliverer(), own_deliverer()
    try:
        async with make_session_factory(first_engine)() as stalled:
            [claimed] = (await first._claim(stalled, 1, Counter()))[0]
            pids = await stalled.execute(text("SELECT pg_backend_pid()"))
            stalled_pid = pids.scalar_one()

            report = await asyncio.wait_for(second.deliver_due(), PATIENCE_SECONDS)

            assert report.as_dict() == {"sent": 1, "retried": 0, "failed": 0}
            [other] = [n for d, n in numbered.items() if d != claimed.delivery_id]
            assert [r.payload["data"]["number"] for r in receiver.accepted()] == [other]
            async with committing_factory() as look:
                # B ran on connections of its own, not on A's.
                busy = await look.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid = :pid "
                        "AND state = 'idle in transaction'"
                    ),
                    {"pid": stalled_pid},
                )
                assert busy.scalar_one() == 1
            await stalled.rollback()  # A gives up its claim; the row is free again

        report = await second.deliver_due()
        assert report.as_dict() == {"sent": 1, "retried": 0, "failed": 0}
        assert sorted(r.payload["data"]["number"] for r in receiver.accepted()) == [0, 1]
        assert set(receiver.ids_accepted().values()) == {1}  # each event once
    finally:
        for made, engine in ((first, first_engine), (second, second_engine)):
            await made.aclose()
            await engine.dispose()
