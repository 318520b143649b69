"""Tenant isolation, one promise at a time: organizations, locations, therapists, API keys."""

from __future__ import annotations

import httpx

from tests.support import ok
from tests.tenant_isolation.world import TIME_OFF, World, api_key_id

# Organizations and their locations: a coordinator's own, nobody else's. Therapists: a therapist
# sees their own record only. Keys: a revoked one is refused at once.


async def test_coordinator_lists_organizations_and_sees_only_their_own(world: World) -> None:
    page = ok(await world.api.client.get("/v1/organizations", headers=world.coordinator_a))
    assert [org["id"] for org in page["data"]] == [world.org_a["id"]]
    assert page["next_cursor"] is None


async def test_coordinator_cannot_read_another_organization(world: World) -> None:
    response = await world.api.client.get(
        f"/v1/organizations/{world.org_b['id']}", headers=world.coordinator_a
    )
    assert response.status_code == 404
    assert world.org_b["name"] not in response.text
    assert world.org_b["billing_email"] not in response.text


async def test_each_caller_reads_one_by_one_exactly_the_organizations_of_its_reach(
    world: World,
) -> None:
    """An organization's lookup (every route under /v1/organizations/{id} starts with it) is
    built once per kind of caller: two coordinators interleaved with staff each read both
    organizations and their locations; a therapist reads none."""
    api = world.api
    a, b = world.org_a["id"], world.org_b["id"]
    callers = [
        (world.coordinator_a, {a}, 404),
        (await api.coordinator(b), {b}, 404),
        (world.finance, {a, b}, 404),
        (api.admin, {a, b}, 404),
        (world.therapist_1_key, set(), 403),
    ]
    for suffix in ("", "/locations"):
        read: list[set[str]] = [set() for _ in callers]
        for org_id in (a, b, a, b):
            for (headers, _, refused), seen in zip(callers, read, strict=True):
                response = await api.client.get(
                    f"/v1/organizations/{org_id}{suffix}", headers=headers
                )
                assert response.status_code in (200, refused), response.text
                if response.status_code == 200:
                    seen.add(org_id)
        assert read == [reach for _, reach, _ in callers], suffix


async def test_coordinator_cannot_change_another_organization(world: World) -> None:
    client = world.api.client
    response = await client.patch(
        f"/v1/organizations/{world.org_b['id']}",
        json={"name": "Taken over", "billing_email": "thief@example.org"},
        headers=world.coordinator_a,
    )
    assert response.status_code == 404
    after = ok(await client.get(f"/v1/organizations/{world.org_b['id']}", headers=world.api.admin))
    assert after == world.org_b


async def test_coordinator_cannot_add_a_location_to_another_organization(world: World) -> None:
    client = world.api.client
    response = await client.post(
        f"/v1/organizations/{world.org_b['id']}/locations",
        json={"name": "Smuggled Room", "timezone": "America/Edmonton"},
        headers=world.coordinator_a,
    )
    assert response.status_code == 404
    locations = ok(
        await client.get(
            f"/v1/organizations/{world.org_b['id']}/locations", headers=world.api.admin
        )
    )
    assert [loc["id"] for loc in locations["data"]] == [world.location_b["id"]]


async def test_coordinator_cannot_list_another_organizations_locations(world: World) -> None:
    response = await world.api.client.get(
        f"/v1/organizations/{world.org_b['id']}/locations", headers=world.coordinator_a
    )
    assert response.status_code == 404
    assert world.location_b["name"] not in response.text


async def test_coordinator_lists_their_own_locations_only(world: World) -> None:
    page = ok(
        await world.api.client.get(
            f"/v1/organizations/{world.org_a['id']}/locations", headers=world.coordinator_a
        )
    )
    assert [loc["id"] for loc in page["data"]] == [world.location_a["id"]]


async def test_therapist_lists_therapists_and_sees_only_themself(world: World) -> None:
    page = ok(await world.api.client.get("/v1/therapists", headers=world.therapist_1_key))
    assert [t["id"] for t in page["data"]] == [world.therapist_1["id"]]
    assert page["next_cursor"] is None


async def test_therapist_reads_their_own_record(world: World) -> None:
    got = ok(
        await world.api.client.get(
            f"/v1/therapists/{world.therapist_1['id']}", headers=world.therapist_1_key
        )
    )
    assert got == world.therapist_1


async def test_therapist_cannot_read_another_therapist(world: World) -> None:
    response = await world.api.client.get(
        f"/v1/therapists/{world.therapist_2['id']}", headers=world.therapist_1_key
    )
    assert response.status_code == 404
    assert world.therapist_2["email"] not in response.text


async def test_therapist_cannot_record_time_off_for_another_therapist(world: World) -> None:
    client = world.api.client
    response = await client.post(
        f"/v1/therapists/{world.therapist_2['id']}/time-off",
        json=TIME_OFF,
        headers=world.therapist_1_key,
    )
    assert response.status_code == 404
    time_off = ok(
        await client.get(
            f"/v1/therapists/{world.therapist_2['id']}/time-off", headers=world.api.admin
        )
    )
    assert time_off["data"] == []


async def test_revoked_coordinator_key_is_refused_at_once(world: World) -> None:
    client = world.api.client
    key_id = await api_key_id(world.api, world.coordinator_a)
    ok(await client.delete(f"/v1/api-keys/{key_id}", headers=world.api.admin))
    response = await client.get(
        f"/v1/organizations/{world.org_a['id']}", headers=world.coordinator_a
    )
    assert response.status_code == 401
    assert world.org_a["name"] not in response.text


async def test_revoked_coordinator_key_cannot_replay_an_earlier_idempotent_request(
    world: World,
) -> None:
    client = world.api.client

    async def create_room() -> httpx.Response:
        return await client.post(
            f"/v1/organizations/{world.org_a['id']}/locations",
            json={"name": "Music Room 2", "timezone": "America/Edmonton"},
            headers={**world.coordinator_a, "Idempotency-Key": "room-2"},
        )

    ok(await create_room(), 201)
    key_id = await api_key_id(world.api, world.coordinator_a)
    ok(await client.delete(f"/v1/api-keys/{key_id}", headers=world.api.admin))
    replay = await create_room()
    assert replay.status_code == 401
    assert "Music Room 2" not in replay.text
