"""The fake Stripe behaves as Stripe does where our pushes depend on it, seen through the SDK."""

from __future__ import annotations

import pytest
import stripe
from pydantic import SecretStr

from service.core.settings import Settings
from service.integrations import stripe_api
from tests.fake_stripe import FakeStripe, stripe_fixtures

stripe_server, fake_stripe, settings = stripe_fixtures()


def client_for(settings: Settings) -> stripe.StripeClient:
    client = stripe_api.make_client(settings, max_network_retries=0)
    assert client is not None
    return client


async def test_a_wrong_secret_key_is_refused(fake_stripe: FakeStripe, settings: Settings):
    stranger = client_for(settings.model_copy(update={"stripe_api_key": SecretStr("sk_test_x")}))
    with pytest.raises(stripe.AuthenticationError):
        await stranger.v1.customers.create_async({"name": "Nobody"})
    assert fake_stripe.customers == {}


async def test_a_key_replays_its_first_answer_and_refuses_other_parameters(
    fake_stripe: FakeStripe, settings: Settings
):
    client = client_for(settings)
    options: stripe.RequestOptions = {"idempotency_key": "k1"}
    first = await client.v1.customers.create_async({"name": "A"}, options)
    again = await client.v1.customers.create_async({"name": "A"}, options)
    assert again.id == first.id
    assert again.last_response is not None
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    with pytest.raises(stripe.IdempotencyError):
        await client.v1.customers.create_async({"name": "B"}, options)
    assert len(fake_stripe.customers) == 1


async def test_a_refusal_is_saved_under_its_key_and_replayed(
    fake_stripe: FakeStripe, settings: Settings
):
    client = client_for(settings)
    fake_stripe.fail("customer", "refuse", times=1)
    options: stripe.RequestOptions = {"idempotency_key": "k2"}
    for _ in range(2):
        with pytest.raises(stripe.APIError) as refused:
            await client.v1.customers.create_async({"name": "A"}, options)
    assert refused.value.http_status == 500
    assert (refused.value.headers or {}).get("Idempotent-Replayed") == "true"
    assert fake_stripe.customers == {}
    fresh = await client.v1.customers.create_async({"name": "A"}, {"idempotency_key": "k3"})
    assert fresh.id in fake_stripe.customers


async def test_a_hang_up_happens_after_stripe_acted(fake_stripe: FakeStripe, settings: Settings):
    client = client_for(settings)
    fake_stripe.fail("customer", "hang_up", times=1)
    with pytest.raises(stripe.APIConnectionError):
        await client.v1.customers.create_async({"name": "A"}, {"idempotency_key": "k4"})
    assert len(fake_stripe.customers) == 1
    replay = await client.v1.customers.create_async({"name": "A"}, {"idempotency_key": "k4"})
    assert list(fake_stripe.customers) == [replay.id]
