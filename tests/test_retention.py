"""The `apply-retention` job: each kind of record is deleted once older than its period in
settings, never a delivery still waiting (pending) or kept for a manual retry (failed), in
batches of a bounded size, and the run shows in `GET /v1/jobs`.

PostgreSQL's now() stands still inside the test's transaction, so ages are set with now().
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from models.jobs import JobOutcome
from models.webhooks import EventType
from service.core import idempotency, outbox
from service.core.auth import caller_fingerprint
from service.core.settings import Settings
from service.jobs import retention
from service.jobs.scheduler import job_context, run_job
from tests.support import Api, ok
from tests.webhooks_support import issued


def in_test_transaction(connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )


async def age(db: AsyncSession, table: str, where: str, interval: str, **params: Any) -> None:
    await db.execute(
        text(f"UPDATE {table} SET created_at = now() - CAST(:age AS interval) WHERE {where}"),
        {"age": interval, **params},
    )


def key_hashes(api: Api, *keys: str) -> list[str]:
    """Idempotency-Keys as the table keeps them (hashed with the caller)."""
    caller = caller_fingerprint(api.admin["Authorization"])
    return [idempotency.key_hash(caller, key) for key in keys]


async def age_keys(db: AsyncSession, api: Api, keys: list[str], interval: str) -> None:
    hashes = key_hashes(api, *keys)
    await age(db, "idempotency_keys", "key_hash = ANY(:hashes)", interval, hashes=hashes)


async def kept_keys(db: AsyncSession, api: Api, *candidates: str) -> list[str]:
    """The Idempotency-Keys still remembered, among `candidates`, in order."""
    by_hash = dict(zip(key_hashes(api, *candidates), candidates, strict=True))
    rows = await db.execute(text("SELECT key_hash FROM idempotency_keys"))
    return sorted(by_hash.get(h, h) for h in rows.scalars())


async def create_clinics(api: Api, *keys: str) -> dict[str, str]:
    """One organization per Idempotency-Key; its id by key."""
    made = {}
    for key in keys:
        body = {"name": f"Clinic {key}", "kind": "clinic", "timezone": "America/Edmonton"}
        headers = {**api.admin, "Idempotency-Key": key}
        made[key] = ok(await api.client.post("/v1/organizations", json=body, headers=headers), 201)[
            "id"
        ]
    return made


async def publish(db: AsyncSession, event_type: EventType, count: int) -> list[uuid.UUID]:
    resources = issued(count)
    await outbox.publish_many(db, event_type, resources)
    rows = await db.execute(
        text(
            "SELECT id FROM webhook_events WHERE data->>'id' = ANY(:ids) "
            "ORDER BY (data->>'number')::int"
        ),
        {"ids": [str(r.id) for r in resources]},
    )
    return list(rows.scalars())


async def finish(db: AsyncSession, event_id: uuid.UUID, status: str, interval: str) -> None:
    """The event's delivery ends as `status` (with one attempt logged), `interval` ago."""
    await db.execute(
        text(
            "UPDATE webhook_deliveries SET status = CAST(:status AS text), "
            "next_attempt_at = CASE WHEN CAST(:status AS text) = 'pending' THEN now() END, "
            "delivered_at = CASE WHEN CAST(:status AS text) = 'succeeded' THEN now() END, "
            "attempt_count = 1, "
            "created_at = now() - CAST(:age AS interval) WHERE event_id = :event"
        ),
        {"status": status, "age": interval, "event": event_id},
    )
    await db.execute(
        text(
            "INSERT INTO webhook_attempts (id, delivery_id, attempt, attempted_at, duration_ms) "
            "SELECT gen_random_uuid(), id, 1, now(), 12 FROM webhook_deliveries "
            "WHERE event_id = :event"
        ),
        {"event": event_id},
    )
    await age(db, "webhook_events", "id = :event", interval, event=event_id)


async def count(db: AsyncSession, table: str) -> int:
    return int((await db.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def test_each_record_is_kept_for_its_period_and_deleted_after_it(
    api: Api, db: AsyncSession, connection: AsyncConnection, settings: Settings
):
    orgs = await create_clinics(api, "day-old", "hours-old", "fresh")
    await age_keys(db, api, ["day-old"], "25 hours")
    await age_keys(db, api, ["hours-old"], "23 hours")
    await age(db, "audit_events", "entity_id = :id", "731 days", id=orgs["day-old"])
    await age(db, "audit_events", "entity_id = :id", "729 days", id=orgs["hours-old"])
    endpoint = ok(
        await api.client.post(
            "/v1/webhook-endpoints",
            json={"url": "http://127.0.0.1:9/hook", "events": [EventType.invoice_issued.value]},
            headers=api.admin,
        ),
        201,
    )
    sent_old, sent_recent, cancelled_old, failed_old, pending_old = await publish(
        db, EventType.invoice_issued, 5
    )
    (unsubscribed_old,) = await publish(db, EventType.invoice_paid, 1)  # no delivery at all
    await finish(db, sent_old, "succeeded", "31 days")
    await finish(db, sent_recent, "succeeded", "29 days")
    await finish(db, cancelled_old, "cancelled", "31 days")
    await finish(db, failed_old, "failed", "31 days")
    await finish(db, pending_old, "pending", "31 days")
    await age(db, "webhook_events", "id = :event", "31 days", event=unsubscribed_old)
    await db.commit()
    audited_before = await count(db, "audit_events")

    ctx = job_context(settings, in_test_transaction(connection), None)
    outcome = await run_job(ctx, "apply-retention")
    await ctx.deliverer.aclose()

    summary = {
        "deleted": {
            "idempotency_records": 1,
            "webhook_deliveries": 2,
            "webhook_events": 3,
            "audit_events": 1,
        },
        "statements": 4,
        "complete": True,
    }
    assert outcome == (JobOutcome.succeeded, summary)
    assert await kept_keys(db, api, "day-old", "hours-old", "fresh") == ["fresh", "hours-old"]
    events = await db.execute(text("SELECT id FROM webhook_events"))
    assert set(events.scalars()) == {sent_recent, failed_old, pending_old}
    deliveries = await db.execute(
        text("SELECT status FROM webhook_deliveries WHERE endpoint_id = :e ORDER BY status"),
        {"e": endpoint["id"]},
    )
    assert deliveries.scalars().all() == ["failed", "pending", "succeeded"]
    assert await count(db, "webhook_attempts") == 3  # the deleted deliveries' went with them
    assert await count(db, "audit_events") == audited_before - 1
    gone = await db.execute(
        text("SELECT count(*) FROM audit_events WHERE entity_id = :id"), {"id": orgs["day-old"]}
    )
    assert gone.scalar_one() == 0

    listed = ok(await api.client.get("/v1/jobs", headers=api.admin))
    (job,) = [job for job in listed["data"] if job["name"] == "apply-retention"]
    assert (job["schedule"], job["last_run"]["outcome"], job["last_run"]["detail"]) == (
        "hourly at :15",
        "succeeded",
        summary,
    )

    again = await run_job(ctx, "apply-retention")
    assert again[1]["deleted"] == {
        "idempotency_records": 0,
        "webhook_deliveries": 0,
        "webhook_events": 0,
        "audit_events": 0,
    }


async def test_periods_come_from_the_settings(
    api: Api, db: AsyncSession, connection: AsyncConnection, settings: Settings
):
    await create_clinics(api, "two-hours-old", "fresh")
    await age_keys(db, api, ["two-hours-old"], "2 hours")
    await db.commit()
    shorter = settings.model_copy(update={"idempotency_retention_hours": 1})

    run = await retention.apply_retention(in_test_transaction(connection), shorter)

    assert run.deleted["idempotency_records"] == 1
    assert await kept_keys(db, api, "two-hours-old", "fresh") == ["fresh"]


async def test_rows_are_deleted_in_batches_of_the_given_size(
    api: Api, db: AsyncSession, connection: AsyncConnection, settings: Settings
):
    await create_clinics(api, *(f"old-{n}" for n in range(5)))
    await age_keys(db, api, [f"old-{n}" for n in range(5)], "25 hours")
    await db.commit()

    run = await retention.apply_retention(in_test_transaction(connection), settings, batch_size=2)

    # 2 + 2 + 1 idempotency records, then one (empty) statement for each other kind.
    assert run.as_dict() == {
        "deleted": {
            "idempotency_records": 5,
            "webhook_deliveries": 0,
            "webhook_events": 0,
            "audit_events": 0,
        },
        "statements": 6,
        "complete": True,
    }
    assert await count(db, "idempotency_keys") == 0


async def test_a_run_stops_when_its_time_is_up_and_the_next_one_goes_on(
    api: Api, db: AsyncSession, connection: AsyncConnection, settings: Settings
):
    await create_clinics(api, *(f"old-{n}" for n in range(5)))
    await age_keys(db, api, [f"old-{n}" for n in range(5)], "25 hours")
    await db.commit()
    # A clock that reads 0 for the start and two batches, then is past the budget.
    ticks = itertools.chain([0.0, 0.0, 0.0], itertools.repeat(100.0))

    run = await retention.apply_retention(
        in_test_transaction(connection),
        settings,
        batch_size=2,
        budget=10.0,
        clock=lambda: next(ticks),
    )

    assert run.as_dict() == {
        "deleted": {"idempotency_records": 4},
        "statements": 2,
        "complete": False,
    }
    assert await count(db, "idempotency_keys") == 1
    rest = await retention.apply_retention(in_test_transaction(connection), settings)
    assert rest.deleted["idempotency_records"] == 1
    assert await count(db, "idempotency_keys") == 0
