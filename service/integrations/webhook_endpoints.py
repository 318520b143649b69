"""Webhook endpoints (admin and finance): register, list, delete, rotate the secret, read the
deliveries and retry one. Secrets follow Standard Webhooks: `whsec_` + base64 of random bytes."""

from __future__ import annotations

import base64
import secrets
import uuid
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.base import Page, utcnow
from models.types import Role
from models.webhooks import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookAttemptRead,
    WebhookDelivery,
    WebhookDeliveryRead,
    WebhookEndpoint,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointRead,
    WebhookEvent,
)
from service.core import audit, crud, outbox
from service.core.auth import Principal, require_role
from service.core.encryption import Keyring
from service.core.errors import FieldError, InvalidState, NotFound, ValidationFailed
from service.core.pagination import PageRequest, paginate
from service.integrations import address_guard

MANAGERS = (Role.admin, Role.finance)
SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
# After a rotation the old secret still signs (beside the new one) for this long.
ROTATION_OVERLAP = timedelta(hours=24)


# Stored encrypted (service/core/encryption.py), bound to the endpoint's id.
SECRET_PURPOSE = "webhook-signing-secret"  # noqa: S105 (a label, not a secret)


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def seal_secret(keyring: Keyring, endpoint_id: uuid.UUID, secret: str) -> str:
    """A signing secret as stored: encrypted, and valid only in its own endpoint's row."""
    return keyring.encrypt_text(SECRET_PURPOSE, secret, aad=endpoint_id.bytes)


def open_secret(keyring: Keyring, endpoint_id: uuid.UUID, sealed: str) -> str:
    return keyring.decrypt_text(SECRET_PURPOSE, sealed, aad=endpoint_id.bytes)


def to_read(endpoint: WebhookEndpoint) -> WebhookEndpointRead:
    return WebhookEndpointRead.model_validate(endpoint, from_attributes=True)


def webhook_id(delivery_id: uuid.UUID) -> str:
    """The Standard Webhooks message id: one per event and endpoint, the same on every retry."""
    return f"msg_{delivery_id.hex}"


async def create(
    db: AsyncSession,
    principal: Principal,
    data: WebhookEndpointCreate,
    *,
    allow_private: bool,
    keyring: Keyring,
) -> WebhookEndpointCreated:
    """Register an endpoint; the secret is in this answer only."""
    require_role(principal, MANAGERS, "manage webhook endpoints")
    try:
        await address_guard.check_url(data.url, allow_private=allow_private)
    except address_guard.RefusedAddress as exc:
        raise ValidationFailed([FieldError("url", str(exc), "unsafe_url")]) from exc
    secret = new_secret()
    endpoint_id = uuid.uuid4()
    endpoint = WebhookEndpoint(
        id=endpoint_id,
        url=data.url,
        events=list(data.events),
        description=data.description,
        secret=seal_secret(keyring, endpoint_id, secret),
    )
    read = await crud.create(
        db, principal, endpoint, action="webhook_endpoint.created", to_read=to_read
    )
    return WebhookEndpointCreated(**read.model_dump(), secret=secret)


async def reseal_secrets(db: AsyncSession, keyring: Keyring) -> int:
    """Re-encrypt every signing secret not yet under the first key of ENSEMBLE_SECRET_KEY (the
    end of a key rotation: afterwards the old key may be removed). The secrets themselves do
    not change, so receivers notice nothing. Answers how many endpoints were re-encrypted."""
    rows = (
        await db.execute(
            select(
                col(WebhookEndpoint.id),
                col(WebhookEndpoint.secret),
                col(WebhookEndpoint.previous_secret),
            ).with_for_update()
        )
    ).all()
    changed = [
        {
            "id": row.id,
            "secret": seal_secret(keyring, row.id, open_secret(keyring, row.id, row.secret)),
            "previous_secret": (
                seal_secret(keyring, row.id, open_secret(keyring, row.id, row.previous_secret))
                if row.previous_secret is not None
                else None
            ),
        }
        for row in rows
        if not all(
            keyring.is_primary(sealed)
            for sealed in (row.secret, row.previous_secret)
            if sealed is not None
        )
    ]
    if changed:
        await db.execute(update(WebhookEndpoint), changed)
    return len(changed)


async def list_endpoints(
    db: AsyncSession, principal: Principal, page: PageRequest
) -> Page[WebhookEndpointRead]:
    require_role(principal, MANAGERS, "manage webhook endpoints")
    stmt = select(WebhookEndpoint).where(col(WebhookEndpoint.deleted_at).is_(None))
    return await paginate(db, stmt, page, to_read)


async def get_live(
    db: AsyncSession, principal: Principal, endpoint_id: uuid.UUID, *, for_update: bool = False
) -> WebhookEndpoint:
    require_role(principal, MANAGERS, "manage webhook endpoints")
    stmt = select(WebhookEndpoint).where(
        col(WebhookEndpoint.id) == endpoint_id, col(WebhookEndpoint.deleted_at).is_(None)
    )
    if for_update:
        stmt = stmt.with_for_update()
    endpoint: WebhookEndpoint = await crud.one_or_404(
        db, stmt, f"Webhook endpoint {endpoint_id} not found"
    )
    return endpoint


async def delete(db: AsyncSession, principal: Principal, endpoint_id: uuid.UUID) -> None:
    """Stop sending to an endpoint. What it has not received yet is cancelled; its delivery log
    is kept."""
    endpoint = await get_live(db, principal, endpoint_id, for_update=True)
    before = to_read(endpoint)
    endpoint.deleted_at = endpoint.updated_at = utcnow()
    await db.execute(
        update(WebhookDelivery)
        .where(
            col(WebhookDelivery.endpoint_id) == endpoint.id,
            col(WebhookDelivery.status) == DeliveryStatus.pending.value,
        )
        .values(status=DeliveryStatus.cancelled.value, next_attempt_at=None)
    )
    await db.flush()
    await audit.record_change(db, principal, "webhook_endpoint.deleted", endpoint, before=before)


async def rotate_secret(
    db: AsyncSession, principal: Principal, endpoint_id: uuid.UUID, *, keyring: Keyring
) -> WebhookEndpointCreated:
    """A new secret, shown once. Deliveries are signed with both secrets for 24 hours."""
    endpoint = await get_live(db, principal, endpoint_id, for_update=True)
    now = utcnow()
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = now + ROTATION_OVERLAP
    secret = new_secret()
    endpoint.secret = seal_secret(keyring, endpoint.id, secret)
    endpoint.updated_at = now
    await db.flush()
    read = to_read(endpoint)
    await audit.record_change(
        db, principal, "webhook_endpoint.secret_rotated", endpoint, after=read
    )
    return WebhookEndpointCreated(**read.model_dump(), secret=secret)


async def list_deliveries(
    db: AsyncSession, principal: Principal, endpoint_id: uuid.UUID, page: PageRequest
) -> Page[WebhookDeliveryRead]:
    """An endpoint's deliveries, oldest first, each with all its attempts."""
    endpoint = await get_live(db, principal, endpoint_id)
    stmt = (
        select(WebhookDelivery, col(WebhookEvent.type))
        .join(WebhookEvent, col(WebhookEvent.id) == WebhookDelivery.event_id)
        .where(col(WebhookDelivery.endpoint_id) == endpoint.id)
    )
    shown = await paginate(db, stmt, page, lambda row: (row[0], row[1]), rows="tuples")
    attempts = await _attempts(db, [delivery.id for delivery, _ in shown.data])
    return Page(
        data=[_delivery_read(d, t, attempts.get(d.id, [])) for d, t in shown.data],
        next_cursor=shown.next_cursor,
    )


async def retry(
    db: AsyncSession, principal: Principal, delivery_id: uuid.UUID
) -> WebhookDeliveryRead:
    """Send a failed delivery again now (one more attempt, the same webhook-id)."""
    require_role(principal, MANAGERS, "manage webhook endpoints")
    row = (
        await db.execute(
            select(WebhookDelivery, col(WebhookEvent.type))
            .join(WebhookEvent, col(WebhookEvent.id) == WebhookDelivery.event_id)
            .join(WebhookEndpoint, col(WebhookEndpoint.id) == WebhookDelivery.endpoint_id)
            .where(
                col(WebhookDelivery.id) == delivery_id,
                col(WebhookEndpoint.deleted_at).is_(None),
            )
            .with_for_update(of=WebhookDelivery)
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"Webhook delivery {delivery_id} not found")
    delivery, event_type = row
    if delivery.status != DeliveryStatus.failed:
        raise InvalidState(
            f"Only a failed delivery can be retried; this one is {delivery.status}",
            delivery_id=str(delivery.id),
            delivery_status=delivery.status,
        )
    delivery.status = DeliveryStatus.pending.value
    delivery.next_attempt_at = utcnow()
    await db.flush()
    await outbox.wake_deliverer(db)
    await audit.record_change(db, principal, "webhook_delivery.retried", delivery)
    attempts = await _attempts(db, [delivery.id])
    return _delivery_read(delivery, event_type, attempts.get(delivery.id, []))


async def _attempts(
    db: AsyncSession, delivery_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[WebhookAttemptRead]]:
    if not delivery_ids:
        return {}
    rows = await db.execute(
        select(WebhookAttempt)
        .where(col(WebhookAttempt.delivery_id).in_(delivery_ids))
        .order_by(col(WebhookAttempt.delivery_id), col(WebhookAttempt.attempt))
    )
    found: dict[uuid.UUID, list[WebhookAttemptRead]] = {}
    for attempt in rows.scalars():
        found.setdefault(attempt.delivery_id, []).append(
            WebhookAttemptRead.model_validate(attempt, from_attributes=True)
        )
    return found


def _delivery_read(
    delivery: WebhookDelivery, event_type: str, attempts: list[WebhookAttemptRead]
) -> WebhookDeliveryRead:
    return WebhookDeliveryRead(
        id=delivery.id,
        webhook_id=webhook_id(delivery.id),
        endpoint_id=delivery.endpoint_id,
        event_id=delivery.event_id,
        event_type=event_type,
        status=DeliveryStatus(delivery.status),
        attempt_count=delivery.attempt_count,
        next_attempt_at=delivery.next_attempt_at,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        created_at=delivery.created_at,
        delivered_at=delivery.delivered_at,
        attempts=attempts,
    )
