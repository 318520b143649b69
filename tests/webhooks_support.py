"""Registering a loopback receiver as a webhook endpoint, through the API."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel

from tests.support import Api, ok
from tests.webhook_receiver import Receiver


async def subscribe(
    api: Api, receiver: Receiver, events: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    """An endpoint for `receiver` (all events by default); the receiver learns its secret."""
    body = {"url": receiver.url, "events": events or ["*"], **extra}
    endpoint: dict[str, Any] = ok(
        await api.client.post("/v1/webhook-endpoints", json=body, headers=api.admin), 201
    )
    receiver.secret = endpoint["secret"]
    return endpoint


async def deliveries(api: Api, endpoint_id: str) -> list[dict[str, Any]]:
    page = await api.client.get(
        f"/v1/webhook-endpoints/{endpoint_id}/deliveries",
        params={"limit": "200"},
        headers=api.admin,
    )
    found: list[dict[str, Any]] = ok(page)["data"]
    return found


class Issued(BaseModel):
    """An event's resource, for tests that publish straight to the outbox."""

    id: uuid.UUID
    number: int


def issued(count: int) -> list[Issued]:
    return [Issued(id=uuid.uuid4(), number=n) for n in range(count)]
