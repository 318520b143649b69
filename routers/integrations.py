"""Integrations: Stripe's webhook endpoint, and the Stripe push that billing routes hand off."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request

from models.billing import StripeWebhookAck
from routers.deps import DbSession
from routers.unit_of_work import Work, work_of
from service.core.auth import Principal
from service.integrations import stripe_webhooks
from service.integrations.stripe_sync import StripeSync

router = APIRouter(prefix="/v1/integrations", tags=["integrations"])


@dataclass(frozen=True)
class StripeAfterCommit:
    """A billing route's Stripe push: run after the route's change is committed, and answered
    with the invoice as it then is (see routers.unit_of_work.Work.answer_with)."""

    sync: StripeSync
    work: Work

    @property
    def enabled(self) -> bool:
        return self.sync.enabled

    def push(self, invoice_id: uuid.UUID, principal: Principal) -> None:
        if self.sync.enabled:
            self.work.answer_with(lambda: self.sync.sync_then_read(invoice_id, principal))


async def stripe_push(request: Request) -> StripeAfterCommit:
    sync = StripeSync(
        client=request.app.state.stripe,
        session_factory=request.app.state.session_factory,
        provider_zone=request.app.state.settings.timezone,
    )
    return StripeAfterCommit(sync, work_of(request.state))


StripePush = Annotated[StripeAfterCommit, Depends(stripe_push)]

_SIGNED_EVENT = {
    "requestBody": {
        "required": True,
        "description": "A Stripe event, exactly as Stripe sent it (the signature covers the bytes)",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


@router.post("/stripe/webhook", openapi_extra=_SIGNED_EVENT)
async def receive_stripe_webhook(
    request: Request,
    db: DbSession,
    stripe_signature: Annotated[str | None, Header()] = None,
) -> StripeWebhookAck:
    """Stripe's webhook (no API key: the `Stripe-Signature` header, checked against
    STRIPE_WEBHOOK_SECRET with a 300 s tolerance, is the proof; else 400 and nothing changes).
    Each event is handled once. `invoice.paid` records a `stripe` payment, `invoice.voided`
    voids an open unpaid invoice, `invoice.payment_failed` and `invoice.marked_uncollectible`
    are audited; a paid invoice never goes back. Other events, and events about invoices that
    are not ours, are answered 200 and change nothing."""
    return await stripe_webhooks.receive(
        db,
        payload=await request.body(),
        signature=stripe_signature,
        secret=request.app.state.settings.stripe_webhook_secret,
    )
