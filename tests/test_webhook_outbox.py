"""Events are written with the change that causes them, and delivered signed (Standard
Webhooks), with one webhook-id per event and endpoint across every attempt."""

from __future__ import annotations

import asyncio

from service.integrations.webhook_delivery import Deliverer
from tests.programs_support import confirmed_program, make_program, sessions_of
from tests.support import ALL_WEEK, Api, ok, problem
from tests.webhook_receiver import Receiver
from tests.webhooks_support import deliveries, subscribe


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
    await asyncio.gather(deliverer.deliver_due(), deliverer.deliver_due())
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
    assert _sample(after, "ensemble_outbox_lag_seconds") >= 0
