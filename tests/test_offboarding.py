"""Off-boarding: a deactivated therapist or organization loses every credential tied to it on
the next request (API keys 401, calendar feeds 404), reactivation brings none back, a revoked
key takes the feeds made with it along, a rotated feed's old URL is dead, and the audit trail
says what was revoked and why."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlparse

import httpx
import psycopg

from tests.concurrency_support import together, wait_for_lock_waiters
from tests.conftest import LiveServer
from tests.support import Api, Headers, bearer, invalid_fields, ok, problem


async def make_key(api: Api, role: str, **scope: str) -> dict[str, Any]:
    """A key as created: its `id` and its secret `key`."""
    body = {"name": f"{role} key", "role": role, **scope}
    created: dict[str, Any] = ok(
        await api.client.post("/v1/api-keys", json=body, headers=api.admin), 201
    )
    return created


async def make_feed(api: Api, headers: Headers, **subject: str) -> dict[str, Any]:
    feed: dict[str, Any] = ok(
        await api.client.post("/v1/calendar-feeds", json=subject, headers=headers), 201
    )
    return feed


async def me_status(api: Api, key: dict[str, Any]) -> int:
    return (await api.client.get("/v1/me", headers=bearer(key["key"]))).status_code


async def feed_status(api: Api, feed: dict[str, Any]) -> int:
    response = await api.client.get(urlparse(feed["url"]).path)
    if response.status_code != 200:
        problem(response, response.status_code)
    return response.status_code


async def admin_key_id(api: Api) -> str:
    return str(ok(await api.client.get("/v1/me", headers=api.admin))["api_key_id"])


async def audit_of(api: Api, entity_id: str) -> list[dict[str, Any]]:
    page = await api.client.get(
        "/v1/audit-events", params={"entity_id": entity_id}, headers=api.admin
    )
    events: list[dict[str, Any]] = ok(page)["data"]
    return events


def revocation(event: dict[str, Any]) -> dict[str, Any]:
    """What a revocation's audit row says, without its own id and time."""
    return {
        "action": event["action"],
        "actor_role": event["actor_role"],
        "actor_key_id": event["actor_key_id"],
        "entity_type": event["entity_type"],
        "organization_id": event["organization_id"],
        "reason": event["reason"],
        "revoked_before": event["before"]["revoked_at"],
        "revoked_after": event["after"]["revoked_at"] is not None,
    }


async def test_deactivating_a_therapist_revokes_their_keys_and_feeds_on_the_next_request(
    api: Api,
):
    therapist = await api.make_therapist()
    colleague = await api.make_therapist()
    key = await make_key(api, "therapist", therapist_id=therapist["id"])
    colleague_key = await make_key(api, "therapist", therapist_id=colleague["id"])
    feed_by_admin = await make_feed(api, api.admin, therapist_id=therapist["id"])
    own_feed = await make_feed(api, bearer(key["key"]), therapist_id=therapist["id"])
    colleague_feed = await make_feed(api, api.admin, therapist_id=colleague["id"])
    assert [await me_status(api, key), await feed_status(api, feed_by_admin)] == [200, 200]

    updated = ok(
        await api.client.patch(
            f"/v1/therapists/{therapist['id']}", json={"active": False}, headers=api.admin
        )
    )

    assert updated["active"] is False
    response = await api.client.get("/v1/me", headers=bearer(key["key"]))
    assert problem(response, 401)["detail"] == "The API key is unknown or has been revoked"
    assert [await feed_status(api, feed_by_admin), await feed_status(api, own_feed)] == [404, 404]
    # Nobody else's credentials are touched.
    assert [await me_status(api, colleague_key), await feed_status(api, colleague_feed)] == [
        200,
        200,
    ]
    admin = await admin_key_id(api)
    key_events = await audit_of(api, key["id"])
    assert [e["action"] for e in key_events] == ["api_key.created", "api_key.revoked"]
    assert revocation(key_events[1]) == {
        "action": "api_key.revoked",
        "actor_role": "admin",
        "actor_key_id": admin,
        "entity_type": "api_key",
        "organization_id": None,
        "reason": "therapist_deactivated",
        "revoked_before": None,
        "revoked_after": True,
    }
    for feed in (feed_by_admin, own_feed):
        feed_events = await audit_of(api, feed["id"])
        assert [e["action"] for e in feed_events] == [
            "calendar_feed.created",
            "calendar_feed.revoked",
        ]
        assert revocation(feed_events[1]) == {
            "action": "calendar_feed.revoked",
            "actor_role": "admin",
            "actor_key_id": admin,
            "entity_type": "calendar_feed",
            "organization_id": None,
            "reason": "therapist_deactivated",
            "revoked_before": None,
            "revoked_after": True,
        }
    change = (await audit_of(api, therapist["id"]))[-1]
    assert (change["action"], change["before"]["active"], change["after"]["active"]) == (
        "therapist.updated",
        True,
        False,
    )


async def test_reactivating_a_therapist_brings_no_credential_back(api: Api):
    therapist = await api.make_therapist()
    key = await make_key(api, "therapist", therapist_id=therapist["id"])
    feed = await make_feed(api, api.admin, therapist_id=therapist["id"])
    path = f"/v1/therapists/{therapist['id']}"
    ok(await api.client.patch(path, json={"active": False}, headers=api.admin))

    # While deactivated, no new credential can be tied to them either.
    refused = await api.client.post(
        "/v1/api-keys",
        json={"name": "again", "role": "therapist", "therapist_id": therapist["id"]},
        headers=api.admin,
    )
    assert invalid_fields(refused) == ["therapist_id"]
    assert refused.json()["errors"][0]["message"] == "is deactivated"
    no_feed = await api.client.post(
        "/v1/calendar-feeds", json={"therapist_id": therapist["id"]}, headers=api.admin
    )
    assert problem(no_feed, 409)["detail"] == f"Therapist {therapist['id']} is deactivated"

    reactivated = ok(await api.client.patch(path, json={"active": True}, headers=api.admin))

    assert reactivated["active"] is True
    assert [await me_status(api, key), await feed_status(api, feed)] == [401, 404]
    keys = ok(await api.client.get("/v1/api-keys", params={"limit": 200}, headers=api.admin))
    [listed] = [k for k in keys["data"] if k["id"] == key["id"]]
    assert listed["revoked_at"] is not None
    # A new key, minted after reactivation, works.
    fresh = await make_key(api, "therapist", therapist_id=therapist["id"])
    assert await me_status(api, fresh) == 200


async def test_deactivating_an_organization_revokes_its_coordinators_keys_and_its_feeds(api: Api):
    org = await api.make_org()
    other_org = await api.make_org()
    first = await make_key(api, "coordinator", organization_id=org["id"])
    second = await make_key(api, "coordinator", organization_id=org["id"])
    other = await make_key(api, "coordinator", organization_id=other_org["id"])
    feed_by_admin = await make_feed(api, api.admin, organization_id=org["id"])
    feed_by_coordinator = await make_feed(api, bearer(first["key"]), organization_id=org["id"])
    other_feed = await make_feed(api, api.admin, organization_id=other_org["id"])

    updated = ok(
        await api.client.patch(
            f"/v1/organizations/{org['id']}", json={"active": False}, headers=api.admin
        )
    )

    assert updated["active"] is False
    assert [await me_status(api, first), await me_status(api, second)] == [401, 401]
    assert [
        await feed_status(api, feed_by_admin),
        await feed_status(api, feed_by_coordinator),
    ] == [404, 404]
    assert [await me_status(api, other), await feed_status(api, other_feed)] == [200, 200]
    admin = await admin_key_id(api)
    for credential, action, entity_type in (
        (first, "api_key.revoked", "api_key"),
        (second, "api_key.revoked", "api_key"),
        (feed_by_admin, "calendar_feed.revoked", "calendar_feed"),
        (feed_by_coordinator, "calendar_feed.revoked", "calendar_feed"),
    ):
        events = await audit_of(api, credential["id"])
        assert len(events) == 2
        assert revocation(events[1]) == {
            "action": action,
            "actor_role": "admin",
            "actor_key_id": admin,
            "entity_type": entity_type,
            "organization_id": org["id"],
            "reason": "organization_deactivated",
            "revoked_before": None,
            "revoked_after": True,
        }
    # Reactivation brings none of them back, and while inactive nothing new is tied to it.
    refused = await api.client.post(
        "/v1/api-keys",
        json={"name": "c", "role": "coordinator", "organization_id": org["id"]},
        headers=api.admin,
    )
    assert invalid_fields(refused) == ["organization_id"]
    ok(
        await api.client.patch(
            f"/v1/organizations/{org['id']}", json={"active": True}, headers=api.admin
        )
    )
    assert [await me_status(api, first), await feed_status(api, feed_by_admin)] == [401, 404]


async def test_only_the_provider_deactivates_an_organization(api: Api):
    org = await api.make_org()
    coordinator = await make_key(api, "coordinator", organization_id=org["id"])

    response = await api.client.patch(
        f"/v1/organizations/{org['id']}", json={"active": False}, headers=bearer(coordinator["key"])
    )

    assert problem(response, 403)["detail"] == "Only the provider may change active"
    assert (
        ok(await api.client.get(f"/v1/organizations/{org['id']}", headers=api.admin))["active"]
        is True
    )
    assert await me_status(api, coordinator) == 200


async def test_revoking_a_key_ends_the_feeds_made_with_it_and_only_those(api: Api):
    org = await api.make_org()
    coordinator = await make_key(api, "coordinator", organization_id=org["id"])
    made_with_key = await make_feed(api, bearer(coordinator["key"]), organization_id=org["id"])
    made_by_admin = await make_feed(api, api.admin, organization_id=org["id"])

    ok(await api.client.delete(f"/v1/api-keys/{coordinator['id']}", headers=api.admin))

    assert await me_status(api, coordinator) == 401
    assert [await feed_status(api, made_with_key), await feed_status(api, made_by_admin)] == [
        404,
        200,
    ]
    key_events = await audit_of(api, coordinator["id"])
    assert [(e["action"], e["reason"]) for e in key_events] == [
        ("api_key.created", None),
        ("api_key.revoked", None),
    ]
    feed_events = await audit_of(api, made_with_key["id"])
    assert revocation(feed_events[1]) == {
        "action": "calendar_feed.revoked",
        "actor_role": "admin",
        "actor_key_id": await admin_key_id(api),
        "entity_type": "calendar_feed",
        "organization_id": org["id"],
        "reason": "api_key_revoked",
        "revoked_before": None,
        "revoked_after": True,
    }
    assert [e["action"] for e in await audit_of(api, made_by_admin["id"])] == [
        "calendar_feed.created"
    ]


async def test_rotating_a_feed_ends_its_old_url_on_the_next_request(api: Api):
    therapist = await api.make_therapist()
    feed = await make_feed(api, api.admin, therapist_id=therapist["id"])

    rotated = ok(
        await api.client.post(f"/v1/calendar-feeds/{feed['id']}/rotate", headers=api.admin)
    )

    assert rotated["id"] == feed["id"]
    assert rotated["token"] != feed["token"]
    assert [await feed_status(api, feed), await feed_status(api, rotated)] == [404, 200]
    events = await audit_of(api, feed["id"])
    assert [(e["action"], e["actor_role"], e["reason"]) for e in events] == [
        ("calendar_feed.created", "admin", None),
        ("calendar_feed.rotated", "admin", None),
    ]
    assert (events[1]["before"]["rotated_at"], events[1]["after"]["rotated_at"]) == (
        None,
        rotated["rotated_at"],
    )


async def test_a_key_or_feed_made_while_its_therapist_is_being_deactivated_waits_and_is_refused(
    contended_server: LiveServer, database_url: str
):
    """Both requests are sent together while the deactivation holds the therapist row, and the
    deactivation commits only once both wait for its lock (pg_stat_activity): had they run
    after it, or one after the other, that never happens and the test fails."""
    admin = await contended_server.admin_key()
    async with httpx.AsyncClient(base_url=contended_server.url, timeout=120) as client:
        therapist = ok(
            await client.post(
                "/v1/therapists",
                json={
                    "name": "Leaving",
                    "email": "leaving@ensemble.example",
                    "timezone": "America/Edmonton",
                },
                headers=admin,
            ),
            201,
        )
        async with await psycopg.AsyncConnection.connect(database_url) as deactivation:
            # A deactivation in flight: the therapist row is changed, not yet committed.
            await deactivation.execute(
                "UPDATE therapists SET active = false WHERE id = %s", (therapist["id"],)
            )
            sending = asyncio.ensure_future(
                together(
                    client.post(
                        "/v1/api-keys",
                        json={"name": "late", "role": "therapist", "therapist_id": therapist["id"]},
                        headers=admin,
                    ),
                    client.post(
                        "/v1/calendar-feeds", json={"therapist_id": therapist["id"]}, headers=admin
                    ),
                )
            )
            await wait_for_lock_waiters(database_url, deactivation.info.backend_pid, 2, sending)
            await deactivation.commit()
        key, feed = await sending

    assert invalid_fields(key) == ["therapist_id"]
    assert problem(feed, 409)["detail"] == f"Therapist {therapist['id']} is deactivated"
    with psycopg.connect(database_url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM api_keys WHERE therapist_id = %s", (therapist["id"],)
        ).fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM calendar_feeds WHERE therapist_id = %s", (therapist["id"],)
        ).fetchone() == (0,)
