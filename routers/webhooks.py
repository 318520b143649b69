"""Outbound webhooks for finance systems (admin and finance): endpoints and their deliveries."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from models.base import Page
from models.webhooks import (
    WebhookDeliveryRead,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointRead,
)
from routers.deps import AppSettings, CurrentPrincipal, DbSession, PageParams
from service.core import encryption
from service.integrations import webhook_endpoints

router = APIRouter(prefix="/v1", tags=["webhooks"])


@router.post("/webhook-endpoints", status_code=status.HTTP_201_CREATED)
async def create_webhook_endpoint(
    body: WebhookEndpointCreate, db: DbSession, principal: CurrentPrincipal, settings: AppSettings
) -> WebhookEndpointCreated:
    """Register a URL for events (`["*"]` for all). The URL must be https and public. `secret`
    (`whsec_...`, for verifying signatures per Standard Webhooks) is shown in this response
    only."""
    return await webhook_endpoints.create(
        db,
        principal,
        body,
        allow_private=settings.webhook_allow_private,
        keyring=encryption.keyring(settings),
    )


@router.get("/webhook-endpoints")
async def list_webhook_endpoints(
    db: DbSession, principal: CurrentPrincipal, page: PageParams
) -> Page[WebhookEndpointRead]:
    """Registered endpoints, oldest first. Secrets are never shown again."""
    return await webhook_endpoints.list_endpoints(db, principal, page)


@router.get("/webhook-endpoints/{endpoint_id}")
async def get_webhook_endpoint(
    endpoint_id: uuid.UUID, db: DbSession, principal: CurrentPrincipal
) -> WebhookEndpointRead:
    """One endpoint."""
    return webhook_endpoints.to_read(await webhook_endpoints.get_live(db, principal, endpoint_id))


@router.delete("/webhook-endpoints/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_webhook_endpoint(
    endpoint_id: uuid.UUID, db: DbSession, principal: CurrentPrincipal
) -> Response:
    """Stop sending to this endpoint; deliveries it has not received are cancelled."""
    await webhook_endpoints.delete(db, principal, endpoint_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/webhook-endpoints/{endpoint_id}/rotate-secret")
async def rotate_webhook_endpoint_secret(
    endpoint_id: uuid.UUID, db: DbSession, principal: CurrentPrincipal, settings: AppSettings
) -> WebhookEndpointCreated:
    """A new signing secret, shown in this response only. For 24 hours deliveries carry a
    signature with the old secret too, so receivers can switch without missing any."""
    return await webhook_endpoints.rotate_secret(
        db, principal, endpoint_id, keyring=encryption.keyring(settings)
    )


@router.get("/webhook-endpoints/{endpoint_id}/deliveries")
async def list_webhook_deliveries(
    endpoint_id: uuid.UUID, db: DbSession, principal: CurrentPrincipal, page: PageParams
) -> Page[WebhookDeliveryRead]:
    """Every event sent (or to send) to this endpoint, oldest first, with each attempt: status
    code, duration, error, and when the next attempt is due."""
    return await webhook_endpoints.list_deliveries(db, principal, endpoint_id, page)


@router.post("/webhook-deliveries/{delivery_id}/retry")
async def retry_webhook_delivery(
    delivery_id: uuid.UUID, db: DbSession, principal: CurrentPrincipal
) -> WebhookDeliveryRead:
    """Send a failed delivery once more, now, with the same `webhook-id`."""
    return await webhook_endpoints.retry(db, principal, delivery_id)
