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


async def open_invoice(client: stripe.StripeClient, amount: int = 5000) -> stripe.Invoice:
    customer = await client.v1.customers.create_async({"name": "A"})
    draft = await client.v1.invoices.create_async(
        {"customer": customer.id, "collection_method": "send_invoice", "days_until_due": 30}
    )
    await client.v1.invoice_items.create_async(
        {"customer": customer.id, "invoice": draft.id, "amount": amount, "currency": "cad"}
    )
    return await client.v1.invoices.finalize_invoice_async(draft.id)


async def test_paying_out_of_band_and_voiding_follow_stripes_states(
    fake_stripe: FakeStripe, settings: Settings
):
    client = client_for(settings)
    first = await open_invoice(client)
    with pytest.raises(stripe.CardError):  # no out of band: Stripe would charge a card
        await client.v1.invoices.pay_async(first.id)
    paid = await client.v1.invoices.pay_async(first.id, {"paid_out_of_band": True})
    assert (paid.status, paid.amount_paid, paid.amount_remaining) == ("paid", 5000, 0)
    with pytest.raises(stripe.InvalidRequestError, match="The invoice is paid"):
        await client.v1.invoices.void_invoice_async(first.id)
    second = await open_invoice(client)
    voided = await client.v1.invoices.void_invoice_async(second.id)
    assert voided.status == "void"
    with pytest.raises(stripe.InvalidRequestError, match="The invoice is void"):
        await client.v1.invoices.pay_async(second.id, {"paid_out_of_band": True})
    with pytest.raises(stripe.InvalidRequestError, match="open or paid"):
        await client.v1.credit_notes.create_async({"invoice": second.id, "amount": 100})


async def test_a_credit_note_needs_an_invoice_an_amount_and_at_most_what_is_left(
    fake_stripe: FakeStripe, settings: Settings
):
    client = client_for(settings)
    invoice = await open_invoice(client)
    with pytest.raises(stripe.InvalidRequestError, match="either amount or lines"):
        await client.v1.credit_notes.create_async({"invoice": invoice.id})
    with pytest.raises(stripe.InvalidRequestError, match="exceeds"):
        await client.v1.credit_notes.create_async({"invoice": invoice.id, "amount": 5001})
    note = await client.v1.credit_notes.create_async({"invoice": invoice.id, "amount": 1500})
    assert (note.amount, note.type, note.status) == (1500, "pre_payment", "issued")
    after = await client.v1.invoices.retrieve_async(invoice.id)
    assert (after.status, after.total, after.amount_remaining) == ("open", 5000, 3500)
    listed = await client.v1.credit_notes.list_async({"invoice": invoice.id})
    assert [n.id for n in listed.data] == [note.id]
    await client.v1.credit_notes.create_async({"invoice": invoice.id, "amount": 3500})
    assert (await client.v1.invoices.retrieve_async(invoice.id)).status == "paid"
    # On a paid invoice the credit must say where it went (here: outside Stripe).
    with pytest.raises(stripe.InvalidRequestError, match="out-of-band"):
        await client.v1.credit_notes.create_async({"invoice": invoice.id, "amount": 1})


async def test_a_busy_stripe_saves_nothing_under_the_key(
    fake_stripe: FakeStripe, settings: Settings
):
    client = client_for(settings)
    options: stripe.RequestOptions = {"idempotency_key": "k5"}
    fake_stripe.fail("customer", "rate_limit", times=1)
    with pytest.raises(stripe.RateLimitError) as limited:
        await client.v1.customers.create_async({"name": "A"}, options)
    assert limited.value.http_status == 429
    fake_stripe.fail("customer", "conflict", times=1)
    with pytest.raises(stripe.StripeError) as locked:
        await client.v1.customers.create_async({"name": "A"}, options)
    assert locked.value.http_status == 409
    assert locked.value.json_body == {
        "error": {
            "type": "invalid_request_error",
            "message": "This object cannot be accessed right now because another API request "
            "or Stripe process is currently accessing it.",
            "code": "lock_timeout",
        }
    }
    assert fake_stripe.customers == {}
    created = await client.v1.customers.create_async({"name": "A"}, options)
    assert created.last_response is not None
    assert "Idempotent-Replayed" not in created.last_response.headers
    assert list(fake_stripe.customers) == [created.id]


async def test_a_key_still_in_flight_is_a_409_until_its_answer_has_left(
    fake_stripe: FakeStripe, settings: Settings
):
    fingerprint = '["POST", "/v1/customers", []]'
    headers = {"authorization": f"Bearer {fake_stripe.secret}", "idempotency-key": "k6"}
    first, _, _, holds = fake_stripe.handle("POST", "/v1/customers", {}, fingerprint, headers)
    assert first is not None and first[0] == 200 and holds
    busy, _, _, _ = fake_stripe.handle("POST", "/v1/customers", {}, fingerprint, headers)
    assert busy is not None and busy[0] == 409
    assert busy[1]["error"]["code"] == "idempotency_key_in_use"
    fake_stripe.answered("k6")
    replay, _, replayed, holds = fake_stripe.handle(
        "POST", "/v1/customers", {}, fingerprint, headers
    )
    assert replay == first and replayed and not holds
    assert len(fake_stripe.customers) == 1
