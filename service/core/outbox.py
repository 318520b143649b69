"""The transactional outbox: an event is written in the transaction of the change that caused it,
with one delivery per subscribed endpoint, so a rolled-back change sends nothing and a committed
one is never lost (the deliverer picks it up whenever it runs next).

A NOTIFY in the same transaction (delivered by PostgreSQL only on commit) wakes the deliverer at
once; it also polls, so a missed notification only costs a second.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from models.webhooks import EventType

CHANNEL = "ensemble_webhooks"

# One round trip: the events, their deliveries to every live endpoint subscribed to the type
# (or to "*"), and a notification when there is anything to send.
_PUBLISH = text(
    """
    WITH event AS (
        INSERT INTO webhook_events (id, type, data, created_at)
        SELECT e.id, e.type, e.data, now()
        FROM jsonb_to_recordset(CAST(:events AS jsonb)) AS e(id uuid, type text, data jsonb)
        RETURNING id, type, created_at
    ), delivery AS (
        INSERT INTO webhook_deliveries
            (id, event_id, endpoint_id, status, attempt_count, next_attempt_at, created_at)
        SELECT gen_random_uuid(), event.id, endpoint.id, 'pending', 0, event.created_at,
               event.created_at
        FROM event
        JOIN webhook_endpoints AS endpoint
          ON endpoint.deleted_at IS NULL
         AND (event.type = ANY(endpoint.events) OR '*' = ANY(endpoint.events))
        RETURNING 1
    )
    SELECT pg_notify(:channel, '') FROM (SELECT 1 FROM delivery LIMIT 1) AS any_delivery
    """
)


def is_event(action: str) -> bool:
    """Whether an audited action is also a webhook event of the same name."""
    return action in EventType._value2member_map_


async def wake_deliverer(db: AsyncSession) -> None:
    """Ask the deliverer to look now (on commit), e.g. after a manual retry."""
    await db.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})


async def publish(db: AsyncSession, event_type: EventType | str, resource: BaseModel) -> None:
    """Record `event_type` about `resource` (as finance reads it), in the caller's transaction."""
    await publish_many(db, EventType(event_type), [resource])


async def publish_many(
    db: AsyncSession, event_type: EventType, resources: Sequence[BaseModel]
) -> None:
    if not resources:
        return
    events: list[dict[str, Any]] = [
        {"id": str(uuid.uuid4()), "type": event_type.value, "data": r.model_dump(mode="json")}
        for r in resources
    ]
    await db.execute(_PUBLISH, {"events": json.dumps(events), "channel": CHANNEL})
