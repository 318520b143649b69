"""Tenant isolation, one promise at a time: calendar feeds."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import ok
from tests.tenant_isolation.world import World, unknown_calendar_token

# Calendar feeds. The token is the credential (anyone holding it reads the feed, no API key),
# so the API only guards who makes, rotates and revokes feeds; an unknown token opens nothing.


async def _feed_still_works(world: World, feed: dict[str, Any]) -> None:
    """The feed neither rotated nor revoked: its token still reads it."""
    response = await world.api.client.get(f"/v1/calendar/{feed['token']}.ics")
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("subject", "status"),
    [("org_a", 201), ("org_b", 404), ("therapist_1", 403), ("therapist_2", 403)],
)
async def test_coordinator_makes_feeds_only_for_their_own_organization(
    world: World, subject: str, status: int
) -> None:
    """Another organization is a 404; a therapist's feed is not a coordinator's to make (403,
    their own therapist T1's included)."""
    body = (
        {"organization_id": getattr(world, subject)["id"]}
        if subject.startswith("org")
        else {"therapist_id": getattr(world, subject)["id"]}
    )
    response = await world.api.client.post(
        "/v1/calendar-feeds", json=body, headers=world.coordinator_a
    )
    assert response.status_code == status, response.text
    if status != 201:
        assert "token" not in response.json()


@pytest.mark.parametrize(
    ("subject", "status"), [("therapist_1", 201), ("therapist_2", 404), ("org_a", 403)]
)
async def test_therapist_makes_a_feed_only_for_themself(
    world: World, subject: str, status: int
) -> None:
    body = (
        {"organization_id": getattr(world, subject)["id"]}
        if subject.startswith("org")
        else {"therapist_id": getattr(world, subject)["id"]}
    )
    response = await world.api.client.post(
        "/v1/calendar-feeds", json=body, headers=world.therapist_1_key
    )
    assert response.status_code == status, response.text
    if status != 201:
        assert "token" not in response.json()


async def test_finance_may_not_make_a_feed(world: World) -> None:
    response = await world.api.client.post(
        "/v1/calendar-feeds", json={"organization_id": world.org_a["id"]}, headers=world.finance
    )
    assert response.status_code == 403, response.text


FOREIGN_FEEDS = [
    ("coordinator_a", "feed_org_b"),
    ("coordinator_a", "feed_therapist_1"),
    ("coordinator_a", "feed_therapist_2"),
    ("therapist_1_key", "feed_therapist_2"),
    ("therapist_1_key", "feed_org_a"),
    ("therapist_1_key", "feed_org_b"),
    ("finance", "feed_org_a"),
]


@pytest.mark.parametrize(("caller", "feed"), FOREIGN_FEEDS)
@pytest.mark.parametrize(("method", "suffix"), [("POST", "/rotate"), ("DELETE", "")])
async def test_a_feed_out_of_reach_is_404_to_rotate_or_revoke_and_keeps_working(
    world: World, caller: str, feed: str, method: str, suffix: str
) -> None:
    target = getattr(world, feed)
    response = await world.api.client.request(
        method, f"/v1/calendar-feeds/{target['id']}{suffix}", headers=getattr(world, caller)
    )
    assert response.status_code == 404, response.text
    assert target["token"] not in response.text
    await _feed_still_works(world, target)


@pytest.mark.parametrize(
    ("caller", "feed"), [("coordinator_a", "feed_org_a"), ("therapist_1_key", "feed_therapist_1")]
)
async def test_a_scoped_key_rotates_and_revokes_its_own_feed(
    world: World, caller: str, feed: str
) -> None:
    client = world.api.client
    headers = getattr(world, caller)
    own = getattr(world, feed)
    rotated = ok(await client.post(f"/v1/calendar-feeds/{own['id']}/rotate", headers=headers))
    assert rotated["id"] == own["id"] and rotated["token"] != own["token"]
    old = await client.get(f"/v1/calendar/{own['token']}.ics")
    assert old.status_code == 404
    await _feed_still_works(world, rotated)
    revoked = ok(await client.delete(f"/v1/calendar-feeds/{own['id']}", headers=headers))
    assert revoked["revoked_at"] is not None
    assert (await client.get(f"/v1/calendar/{rotated['token']}.ics")).status_code == 404
    again = await client.post(f"/v1/calendar-feeds/{own['id']}/rotate", headers=headers)
    assert again.status_code == 409, again.text


@pytest.mark.parametrize("caller", [None, "admin", "finance", "coordinator_a", "therapist_1_key"])
async def test_an_unknown_calendar_token_is_404_for_everyone(
    world: World, caller: str | None
) -> None:
    headers = (
        {} if caller is None else world.api.admin if caller == "admin" else getattr(world, caller)
    )
    response = await world.api.client.get(
        f"/v1/calendar/{unknown_calendar_token()}.ics", headers=headers
    )
    assert response.status_code == 404, response.text
    assert "BEGIN:VCALENDAR" not in response.text
