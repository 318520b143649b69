"""Webhook endpoints, as a finance system's integrator uses them: register a URL and keep the
secret (shown once), rotate it without missing a delivery, read every attempt, retry a delivery
that gave up, delete the endpoint; and the scheduler's jobs, as operations staff read them."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker
from sqlmodel import col
from standardwebhooks import Webhook

from models.webhooks import WebhookDelivery
from service.integrations.webhook_delivery import Deliverer
from service.jobs import state
from tests.programs_support import make_program
from tests.support import Api, invalid_fields, ok, problem
from tests.webhook_receiver import Receiver
from tests.webhooks_support import deliveries, subscribe

ENDPOINT_FIELDS = {"id", "url", "events", "description", "created_at", "updated_at"}
JOBS = [
    "extend-horizon",
    "draft-invoices",
    "stripe-sync",
    "deliver-webhooks",
    "mark-overdue",
    "session-reminders",
    "apply-retention",
]


async def request_a_program(api: Api) -> dict[str, Any]:
    """A coordinator's program request as the admin records it: one `program.requested`."""
    org = await api.make_org()
    program: dict[str, Any] = await make_program(api, org, await api.make_offering())
    return program


async def create_endpoint(api: Api, headers: dict[str, str] | None = None, **body: Any) -> Any:
    payload = {"url": "https://hooks.example.org/ensemble", "events": ["*"], **body}
    return await api.client.post(
        "/v1/webhook-endpoints", json=payload, headers=headers or api.admin
    )


def at(timestamp: str) -> datetime:
    """An RFC 3339 timestamp of the API, which must carry its offset."""
    parsed = datetime.fromisoformat(timestamp)
    assert parsed.tzinfo is not None, timestamp
    return parsed


async def endpoint_of(api: Api, endpoint_id: str) -> Any:
    return await api.client.get(f"/v1/webhook-endpoints/{endpoint_id}", headers=api.admin)


# Registering and reading endpoints.


async def test_a_new_endpoint_is_201_and_shows_its_whsec_secret_once(api: Api) -> None:
    response = await create_endpoint(
        api,
        url="https://hooks.example.org/ensemble",
        events=["invoice.issued", "invoice.paid"],
        description="Ledger sync",
    )

    created = ok(response, 201)
    assert set(created) == ENDPOINT_FIELDS | {"secret"}
    assert created["secret"].startswith("whsec_")
    assert len(base64.b64decode(created["secret"].removeprefix("whsec_"))) == 32
    assert created["url"] == "https://hooks.example.org/ensemble"
    assert created["events"] == ["invoice.issued", "invoice.paid"]
    assert created["description"] == "Ledger sync"
    assert uuid.UUID(created["id"])
    assert at(created["updated_at"]) >= at(created["created_at"])

    one = await endpoint_of(api, created["id"])
    shown = ok(one)
    assert shown == {k: v for k, v in created.items() if k != "secret"}
    listing = await api.client.get("/v1/webhook-endpoints", headers=api.admin)
    assert ok(listing) == {"data": [shown], "next_cursor": None}
    for response in (one, listing):
        assert created["secret"] not in response.text
        assert "secret" not in response.text


async def test_two_endpoints_never_share_a_secret(api: Api) -> None:
    first = ok(await create_endpoint(api), 201)
    second = ok(await create_endpoint(api), 201)
    assert first["secret"] != second["secret"]
    assert first["id"] != second["id"]


async def test_endpoints_are_listed_oldest_first_a_page_at_a_time(api: Api) -> None:
    made = [ok(await create_endpoint(api, description=f"endpoint {n}"), 201) for n in range(3)]

    first = ok(
        await api.client.get("/v1/webhook-endpoints", params={"limit": "2"}, headers=api.admin)
    )
    assert set(first) == {"data", "next_cursor"}
    assert [e["id"] for e in first["data"]] == [made[0]["id"], made[1]["id"]]
    assert isinstance(first["next_cursor"], str)
    second = ok(
        await api.client.get(
            "/v1/webhook-endpoints",
            params={"limit": "2", "cursor": first["next_cursor"]},
            headers=api.admin,
        )
    )
    assert [e["id"] for e in second["data"]] == [made[2]["id"]]
    assert second["next_cursor"] is None


async def test_finance_manages_endpoints_from_creation_to_deletion(api: Api) -> None:
    finance = await api.key("finance")
    created = ok(await create_endpoint(api, finance, events=["invoice.paid"]), 201)
    endpoint_id = created["id"]
    client = api.client

    shown = ok(await client.get(f"/v1/webhook-endpoints/{endpoint_id}", headers=finance))
    assert shown["events"] == ["invoice.paid"]
    listed = ok(await client.get("/v1/webhook-endpoints", headers=finance))
    assert [e["id"] for e in listed["data"]] == [endpoint_id]
    rotated = ok(
        await client.post(f"/v1/webhook-endpoints/{endpoint_id}/rotate-secret", headers=finance)
    )
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]
    page = ok(await client.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries", headers=finance))
    assert page == {"data": [], "next_cursor": None}
    unknown = await client.post(f"/v1/webhook-deliveries/{uuid.uuid4()}/retry", headers=finance)
    problem(unknown, 404)  # allowed to retry; there is just nothing by that id
    deleted = await client.delete(f"/v1/webhook-endpoints/{endpoint_id}", headers=finance)
    assert deleted.status_code == 204


@pytest.mark.parametrize("role", ["coordinator", "therapist"])
async def test_coordinators_and_therapists_may_not_touch_webhook_endpoints(
    api: Api, role: str
) -> None:
    existing = ok(await create_endpoint(api), 201)
    if role == "coordinator":
        headers = await api.coordinator((await api.make_org())["id"])
    else:
        headers = await api.therapist_key((await api.make_therapist())["id"])
    endpoint = f"/v1/webhook-endpoints/{existing['id']}"
    client = api.client

    refused = [
        await create_endpoint(api, headers),
        await client.get("/v1/webhook-endpoints", headers=headers),
        await client.get(endpoint, headers=headers),
        await client.post(f"{endpoint}/rotate-secret", headers=headers),
        await client.get(f"{endpoint}/deliveries", headers=headers),
        await client.post(f"/v1/webhook-deliveries/{uuid.uuid4()}/retry", headers=headers),
        await client.delete(endpoint, headers=headers),
    ]

    for response in refused:
        problem(response, 403)
        assert existing["secret"] not in response.text
    listed = ok(await client.get("/v1/webhook-endpoints", headers=api.admin))
    assert [e["id"] for e in listed["data"]] == [existing["id"]]  # nothing made, nothing deleted


# What an endpoint may subscribe to, and what its body may hold.


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events": ["invoice.refunded"]}, "events.0"),
        ({"events": ["invoice.paid", "program.exploded"]}, "events.1"),
        ({"events": []}, "events"),
        ({"events": ["invoice.paid", "invoice.paid"]}, "events"),
        ({"events": ["*", "invoice.paid"]}, "events"),
        ({"colour": "blue"}, "colour"),
        ({"description": "ledger\x00sync"}, "description"),
        ({"url": None}, "url"),
        ({"url": "/hooks/ensemble"}, "url"),
        ({"url": "hooks.example.org/ensemble"}, "url"),
        ({"url": "ftp://hooks.example.org/ensemble"}, "url"),
    ],
    ids=[
        "unknown-event",
        "unknown-event-after-a-known-one",
        "no-events",
        "an-event-twice",
        "star-with-others",
        "unknown-field",
        "nul-in-description",
        "missing-url",
        "relative-url",
        "url-without-scheme",
        "url-not-http",
    ],
)
async def test_an_invalid_endpoint_is_422_naming_the_field_and_nothing_is_registered(
    api: Api, body: dict[str, Any], field: str
) -> None:
    payload = {"url": "https://hooks.example.org/ensemble", "events": ["*"], **body}
    if payload["url"] is None:
        del payload["url"]
    response = await api.client.post("/v1/webhook-endpoints", json=payload, headers=api.admin)

    assert invalid_fields(response) == [field]
    assert "secret" not in response.json()
    listed = ok(await api.client.get("/v1/webhook-endpoints", headers=api.admin))
    assert listed["data"] == []


async def test_every_event_type_of_the_design_may_be_subscribed_to_at_once(api: Api) -> None:
    events = [
        "program.requested",
        "program.confirmed",
        "program.cancelled",
        "session.rescheduled",
        "session.cancelled",
        "session.completed",
        "session.upcoming",
        "invoice.issued",
        "invoice.paid",
        "invoice.voided",
        "invoice.overdue",
    ]
    created = ok(await create_endpoint(api, events=events), 201)
    assert created["events"] == events


# Deleting.


async def test_a_deleted_endpoint_is_gone_and_what_it_had_not_received_is_cancelled(
    api: Api, receiver: Receiver, deliverer: Deliverer, db: AsyncSession
) -> None:
    endpoint = await subscribe(api, receiver, ["program.requested"])
    kept = ok(await create_endpoint(api, events=["invoice.paid"]), 201)
    await request_a_program(api)
    await deliverer.deliver_due()
    assert len(receiver.accepted()) == 1
    await request_a_program(api)
    await request_a_program(api)
    before = await deliveries(api, endpoint["id"])
    [sent] = [d for d in before if d["status"] == "succeeded"]
    waiting = [d for d in before if d["status"] == "pending"]
    assert len(waiting) == 2

    response = await api.client.delete(f"/v1/webhook-endpoints/{endpoint['id']}", headers=api.admin)

    assert response.status_code == 204
    assert response.content == b""
    problem(await endpoint_of(api, endpoint["id"]), 404)
    listed = ok(await api.client.get("/v1/webhook-endpoints", headers=api.admin))
    assert [e["id"] for e in listed["data"]] == [kept["id"]]
    problem(
        await api.client.delete(f"/v1/webhook-endpoints/{endpoint['id']}", headers=api.admin),
        404,
    )
    statuses = dict(
        (
            await db.execute(
                select(col(WebhookDelivery.id), col(WebhookDelivery.status)).where(
                    col(WebhookDelivery.endpoint_id) == uuid.UUID(endpoint["id"])
                )
            )
        ).all()
    )
    assert statuses == {
        uuid.UUID(sent["id"]): "succeeded",
        **{uuid.UUID(d["id"]): "cancelled" for d in waiting},
    }

    report = await deliverer.deliver_due()
    assert report.as_dict() == {"sent": 0, "retried": 0, "failed": 0}
    assert len(receiver.received) == 1
    await request_a_program(api)  # a new event finds no endpoint to go to
    assert (await deliverer.deliver_due()).as_dict() == {"sent": 0, "retried": 0, "failed": 0}
    assert len(receiver.received) == 1


async def test_an_unknown_endpoint_is_404_for_every_action(api: Api) -> None:
    endpoint = f"/v1/webhook-endpoints/{uuid.uuid4()}"
    client = api.client
    for response in (
        await client.get(endpoint, headers=api.admin),
        await client.delete(endpoint, headers=api.admin),
        await client.post(f"{endpoint}/rotate-secret", headers=api.admin),
        await client.get(f"{endpoint}/deliveries", headers=api.admin),
    ):
        problem(response, 404)


# Rotating the secret.


async def test_after_a_rotation_deliveries_are_signed_with_the_new_secret_and_the_old_one(
    api: Api, receiver: Receiver, deliverer: Deliverer
) -> None:
    endpoint = await subscribe(api, receiver, ["program.requested"])
    old = endpoint["secret"]

    rotated = ok(
        await api.client.post(
            f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", headers=api.admin
        )
    )
    new = rotated["secret"]
    assert set(rotated) == ENDPOINT_FIELDS | {"secret"}
    assert rotated["id"] == endpoint["id"]
    assert new.startswith("whsec_") and new != old
    assert at(rotated["updated_at"]) > at(endpoint["updated_at"])
    assert new not in (await endpoint_of(api, endpoint["id"])).text

    await request_a_program(api)
    await deliverer.deliver_due()

    [request] = receiver.received
    assert request.verified  # the receiver still holds the old secret
    parts = request.headers["webhook-signature"].split(" ")
    assert len(parts) == 2
    assert all(part.startswith("v1,") for part in parts)
    Webhook(new).verify(request.body, request.headers)
    Webhook(old).verify(request.body, request.headers)
    # Each secret signs exactly one of the two: new first, then old.
    signed_by = [
        [
            _verifies(secret, request.body, {**request.headers, "webhook-signature": part})
            for secret in (new, old)
        ]
        for part in parts
    ]
    assert signed_by == [[True, False], [False, True]]


async def test_before_any_rotation_a_delivery_carries_one_signature(
    api: Api, receiver: Receiver, deliverer: Deliverer
) -> None:
    await subscribe(api, receiver, ["program.requested"])
    await request_a_program(api)
    await deliverer.deliver_due()
    [request] = receiver.received
    assert request.verified
    assert len(request.headers["webhook-signature"].split(" ")) == 1
    assert request.headers["webhook-signature"].startswith("v1,")


def _verifies(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except Exception:
        return False
    return True


# The delivery log, and retrying by hand.


async def test_the_deliveries_list_shows_each_attempt_with_its_outcome(
    api: Api, receiver: Receiver, deliverer: Deliverer
) -> None:
    receiver.fail_first = 1
    receiver.delay = 0.2
    endpoint = await subscribe(api, receiver, ["program.requested"])
    await request_a_program(api)

    await deliverer.deliver_due()

    page = ok(
        await api.client.get(
            f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=api.admin
        )
    )
    assert page["next_cursor"] is None
    [delivery] = page["data"]
    assert delivery["endpoint_id"] == endpoint["id"]
    assert delivery["event_type"] == "program.requested"
    assert delivery["webhook_id"] == receiver.received[0].webhook_id
    assert (delivery["status"], delivery["attempt_count"]) == ("succeeded", 2)
    assert (delivery["last_status_code"], delivery["last_error"]) == (204, None)
    assert delivery["next_attempt_at"] is None
    assert delivery["delivered_at"] is not None
    first, second = delivery["attempts"]
    assert set(first) == {
        "attempt",
        "attempted_at",
        "duration_ms",
        "status_code",
        "error",
        "response_excerpt",
        "next_attempt_at",
    }
    assert [first["attempt"], second["attempt"]] == [1, 2]
    assert (first["status_code"], first["error"]) == (500, "answered 500")
    assert (second["status_code"], second["error"]) == (204, None)
    assert first["response_excerpt"] == "ok"
    # The first attempt failed, so it names when the next is due (at once: the test's
    # schedule); the second succeeded, so there is nothing more to do.
    assert first["next_attempt_at"] is not None
    assert at(first["next_attempt_at"]) >= at(first["attempted_at"])
    assert second["next_attempt_at"] is None
    for attempt in (first, second):
        # The receiver sleeps 0.2 s before answering: no attempt is shorter. (How much longer
        # depends on the machine's speed, which no test asserts.)
        assert attempt["duration_ms"] >= 200


async def test_a_receiver_that_always_fails_gets_four_attempts_then_a_manual_retry_delivers(
    api: Api, receiver: Receiver, deliverer: Deliverer
) -> None:
    receiver.status = 500
    endpoint = await subscribe(api, receiver, ["program.requested"])
    await request_a_program(api)

    report = await deliverer.deliver_due()

    assert report.as_dict() == {"sent": 0, "retried": 3, "failed": 1}
    [delivery] = await deliveries(api, endpoint["id"])
    assert (delivery["status"], delivery["attempt_count"], delivery["last_status_code"]) == (
        "failed",
        4,
        500,
    )
    assert delivery["last_error"] == "answered 500"
    assert delivery["next_attempt_at"] is None
    assert delivery["delivered_at"] is None
    assert [a["status_code"] for a in delivery["attempts"]] == [500] * 4
    assert [a["next_attempt_at"] is None for a in delivery["attempts"]] == [False] * 3 + [True]
    assert len(receiver.received) == 4
    assert (await deliverer.deliver_due()).as_dict() == {"sent": 0, "retried": 0, "failed": 0}
    assert len(receiver.received) == 4  # given up: nothing more until someone retries

    receiver.status = 204
    retried = ok(
        await api.client.post(f"/v1/webhook-deliveries/{delivery['id']}/retry", headers=api.admin)
    )
    assert retried["id"] == delivery["id"]
    assert (retried["status"], retried["attempt_count"]) == ("pending", 4)
    assert retried["next_attempt_at"] is not None
    assert retried["webhook_id"] == delivery["webhook_id"]
    assert len(retried["attempts"]) == 4

    assert (await deliverer.deliver_due()).as_dict() == {"sent": 1, "retried": 0, "failed": 0}

    assert [r.webhook_id for r in receiver.received] == [delivery["webhook_id"]] * 5
    assert [r.answered for r in receiver.received] == [500] * 4 + [204]
    [after] = await deliveries(api, endpoint["id"])
    assert (after["status"], after["attempt_count"], after["last_status_code"]) == (
        "succeeded",
        5,
        204,
    )
    assert after["delivered_at"] is not None
    assert [a["status_code"] for a in after["attempts"]] == [500] * 4 + [204]


async def test_a_retry_that_fails_again_ends_failed_after_one_more_attempt(
    api: Api, receiver: Receiver, deliverer: Deliverer
) -> None:
    receiver.status = 500
    endpoint = await subscribe(api, receiver, ["program.requested"])
    await request_a_program(api)
    await deliverer.deliver_due()
    [delivery] = await deliveries(api, endpoint["id"])

    ok(await api.client.post(f"/v1/webhook-deliveries/{delivery['id']}/retry", headers=api.admin))
    assert (await deliverer.deliver_due()).as_dict() == {"sent": 0, "retried": 0, "failed": 1}

    [after] = await deliveries(api, endpoint["id"])
    assert (after["status"], after["attempt_count"]) == ("failed", 5)
    assert len(receiver.received) == 5


@pytest.mark.parametrize("outcome", ["succeeded", "pending"])
async def test_only_a_failed_delivery_can_be_retried(
    api: Api, receiver: Receiver, deliverer: Deliverer, outcome: str
) -> None:
    endpoint = await subscribe(api, receiver, ["program.requested"])
    await request_a_program(api)
    if outcome == "succeeded":
        await deliverer.deliver_due()
    [delivery] = await deliveries(api, endpoint["id"])
    assert delivery["status"] == outcome

    response = await api.client.post(
        f"/v1/webhook-deliveries/{delivery['id']}/retry", headers=api.admin
    )

    body = problem(response, 409)
    assert outcome in body["detail"]
    assert body["delivery_id"] == delivery["id"]
    [after] = await deliveries(api, endpoint["id"])
    assert after == delivery
    await deliverer.deliver_due()
    assert len(receiver.received) == 1


async def test_retrying_an_unknown_delivery_is_404(api: Api) -> None:
    response = await api.client.post(
        f"/v1/webhook-deliveries/{uuid.uuid4()}/retry", headers=api.admin
    )
    problem(response, 404)


async def test_a_delivery_of_a_deleted_endpoint_cannot_be_retried(
    api: Api, receiver: Receiver, deliverer: Deliverer
) -> None:
    receiver.status = 500
    endpoint = await subscribe(api, receiver, ["program.requested"])
    await request_a_program(api)
    await deliverer.deliver_due()
    [delivery] = await deliveries(api, endpoint["id"])
    assert delivery["status"] == "failed"
    deleted = await api.client.delete(f"/v1/webhook-endpoints/{endpoint['id']}", headers=api.admin)
    assert deleted.status_code == 204

    response = await api.client.post(
        f"/v1/webhook-deliveries/{delivery['id']}/retry", headers=api.admin
    )

    problem(response, 404)
    await deliverer.deliver_due()
    assert len(receiver.received) == 4


# One slow endpoint holds up only itself.


async def test_a_slow_endpoint_does_not_delay_another(
    api: Api, deliverer: Deliverer, receiver: Receiver, db: AsyncSession
) -> None:
    slow, fast = receiver, Receiver().start()
    try:
        # The slow endpoint answers only once the fast one has got its request: a deliverer
        # that sent one at a time would never let that happen (503 after the receiver's bound).
        slow.hold = fast.arrived
        slow_endpoint = await subscribe(api, slow, ["program.requested"])
        await subscribe(api, fast, ["program.requested"])
        await request_a_program(api)
        # The slow endpoint's delivery is due first, so a deliverer that sent one at a time
        # would keep the fast endpoint waiting behind it. (Inside the test's one transaction
        # both were written at the same now(); set the order explicitly.)
        await db.execute(
            update(WebhookDelivery)
            .where(col(WebhookDelivery.endpoint_id) == uuid.UUID(slow_endpoint["id"]))
            .values(next_attempt_at=datetime.now(UTC) - timedelta(minutes=1))
        )
        await db.commit()

        report = await deliverer.deliver_due()

        assert report.as_dict() == {"sent": 2, "retried": 0, "failed": 0}
        [slow_request] = slow.accepted()
        [fast_request] = fast.accepted()
        assert fast_request.webhook_id != slow_request.webhook_id
        assert fast_request.body == slow_request.body  # the same event to both
    finally:
        fast.stop()


# The scheduler's jobs.


async def test_admins_read_every_job_with_its_schedule_and_next_run(api: Api) -> None:
    response = ok(await api.client.get("/v1/jobs", headers=api.admin))

    assert [job["name"] for job in response["data"]] == JOBS
    assert response["leader"] is None  # no scheduler runs in the tests
    now = datetime.now().astimezone()
    for job in response["data"]:
        assert isinstance(job["schedule"], str) and job["schedule"]
        assert job["description"]
        assert datetime.fromisoformat(job["next_run_at"]) > now
    by_name = {job["name"]: job for job in response["data"]}
    assert by_name["deliver-webhooks"]["schedule"] == "every second, and on every new event"
    assert (
        by_name["draft-invoices"]["schedule"] == "monthly on the 1st at 02:00 (ENSEMBLE_TIMEZONE)"
    )


async def test_jobs_name_the_leader_while_a_scheduler_beats_its_heartbeat(
    api: Api, connection: AsyncConnection
) -> None:
    factory = async_sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    await state.record_leader(factory, acquired=True)

    response = ok(await api.client.get("/v1/jobs", headers=api.admin))

    leader = response["leader"]
    assert set(leader) == {"pid", "hostname", "since"}
    assert isinstance(leader["pid"], int)


@pytest.mark.parametrize("role", ["finance", "coordinator", "therapist"])
async def test_only_admins_read_the_jobs(api: Api, role: str) -> None:
    if role == "coordinator":
        headers = await api.coordinator((await api.make_org())["id"])
    elif role == "therapist":
        headers = await api.therapist_key((await api.make_therapist())["id"])
    else:
        headers = await api.key("finance")
    response = await api.client.get("/v1/jobs", headers=headers)
    problem(response, 403)
    assert "deliver-webhooks" not in response.text
