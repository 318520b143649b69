"""Tenant isolation, one promise at a time: what is the provider's alone (reports, outbound
webhooks, the scheduler's jobs)."""

from __future__ import annotations

import pytest

from tests.support import ok
from tests.tenant_isolation.walk import REPORTS
from tests.tenant_isolation.world import DATE_QUERY_PARAMETERS, WEBHOOK_URL, World

# Reports aggregate every tenant: the provider's (admin, finance) alone.


@pytest.mark.parametrize("path", sorted(path for _, path in REPORTS))
@pytest.mark.parametrize("caller", ["coordinator_a", "therapist_1_key"])
async def test_reports_are_refused_to_scoped_keys(world: World, path: str, caller: str) -> None:
    response = await world.api.client.get(
        path, params=DATE_QUERY_PARAMETERS, headers=getattr(world, caller)
    )
    assert response.status_code == 403, response.text
    assert world.therapist_2["name"] not in response.text


# Outbound webhooks and the scheduler are the provider's: a scoped key is refused by role (403),
# with the real ids of the provider's endpoint and delivery, and changes nothing.


@pytest.mark.parametrize("caller", ["coordinator_a", "therapist_1_key"])
async def test_scoped_keys_get_403_on_every_webhook_route_and_the_jobs(
    world: World, caller: str
) -> None:
    client = world.api.client
    headers = getattr(world, caller)
    endpoint, delivery = world.webhook_endpoint, world.webhook_delivery
    endpoint_path = f"/v1/webhook-endpoints/{endpoint['id']}"
    before = ok(await client.get(f"{endpoint_path}/deliveries", headers=world.api.admin))
    responses = [
        await client.post(
            "/v1/webhook-endpoints",
            json={"url": WEBHOOK_URL, "events": ["*"]},
            headers=headers,
        ),
        await client.get("/v1/webhook-endpoints", headers=headers),
        await client.get(endpoint_path, headers=headers),
        await client.post(f"{endpoint_path}/rotate-secret", headers=headers),
        await client.get(f"{endpoint_path}/deliveries", headers=headers),
        await client.post(f"/v1/webhook-deliveries/{delivery['id']}/retry", headers=headers),
        await client.delete(endpoint_path, headers=headers),
        await client.get("/v1/jobs", headers=headers),
    ]
    assert [r.status_code for r in responses] == [403] * len(responses)
    for response in responses:
        assert endpoint["url"] not in response.text
        assert endpoint["secret"] not in response.text
        assert "whsec_" not in response.text
    listed = ok(await client.get("/v1/webhook-endpoints", headers=world.api.admin))
    assert [e["id"] for e in listed["data"]] == [endpoint["id"]]
    shown = ok(await client.get(endpoint_path, headers=world.api.admin))
    assert shown["updated_at"] == endpoint["updated_at"]  # the secret was not rotated
    after = ok(await client.get(f"{endpoint_path}/deliveries", headers=world.api.admin))
    assert after == before


async def test_the_world_has_a_delivery_for_every_event_since_the_endpoint_was_registered(
    world: World,
) -> None:
    """The walk's delivery id is a real one: the endpoint (subscribed to "*") was registered
    first, so the world's programs and invoices each left one behind, waiting."""
    page = ok(
        await world.api.client.get(
            f"/v1/webhook-endpoints/{world.webhook_endpoint['id']}/deliveries",
            params={"limit": "200"},
            headers=world.api.admin,
        )
    )
    types = {d["event_type"] for d in page["data"]}
    assert {"program.requested", "program.confirmed", "invoice.issued"} <= types
    assert {d["status"] for d in page["data"]} == {"pending"}
    assert world.webhook_delivery["id"] in {d["id"] for d in page["data"]}
