"""Idempotency-Key on POST: a retry replays the first answer and never repeats the change."""

from __future__ import annotations

import uuid

import httpx
import psycopg

from service.core import idempotency
from service.core.auth import caller_fingerprint
from tests.concurrency_support import Gate, race
from tests.conftest import LiveServer
from tests.support import Api, ok


def org_body(name: str) -> dict[str, object]:
    return {"name": name, "kind": "clinic", "timezone": "America/Edmonton"}


async def count_orgs_named(api: Api, name: str) -> int:
    listed = ok(await api.client.get("/v1/organizations?limit=200", headers=api.admin))
    return sum(1 for o in listed["data"] if o["name"] == name)


async def test_a_retried_post_replays_the_first_response_and_creates_once(api: Api):
    headers = {**api.admin, "Idempotency-Key": "create-clinic-1"}
    first = await api.client.post("/v1/organizations", json=org_body("Clinic A"), headers=headers)
    second = await api.client.post("/v1/organizations", json=org_body("Clinic A"), headers=headers)
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json() == first.json()
    assert second.headers.get("idempotent-replayed") == "true"
    assert await count_orgs_named(api, "Clinic A") == 1


async def test_the_same_key_with_a_different_body_is_422(api: Api):
    headers = {**api.admin, "Idempotency-Key": "create-clinic-2"}
    ok(await api.client.post("/v1/organizations", json=org_body("Clinic B"), headers=headers), 201)
    reused = await api.client.post("/v1/organizations", json=org_body("Clinic C"), headers=headers)
    assert reused.status_code == 422
    assert reused.json()["type"].endswith("/idempotency-key-reused")
    assert await count_orgs_named(api, "Clinic C") == 0


async def test_keys_belong_to_the_caller_who_used_them(api: Api):
    other_admin = await api.key("admin")
    ok(
        await api.client.post(
            "/v1/organizations",
            json=org_body("Clinic D"),
            headers={**api.admin, "Idempotency-Key": "shared"},
        ),
        201,
    )
    ok(
        await api.client.post(
            "/v1/organizations",
            json=org_body("Clinic D"),
            headers={**other_admin, "Idempotency-Key": "shared"},
        ),
        201,
    )
    assert await count_orgs_named(api, "Clinic D") == 2


async def test_a_failed_request_leaves_its_key_free_for_a_corrected_retry(api: Api):
    headers = {**api.admin, "Idempotency-Key": "fix-and-retry"}
    bad = await api.client.post(
        "/v1/organizations",
        json={**org_body("Clinic E"), "timezone": "Mars/Olympus"},
        headers=headers,
    )
    assert bad.status_code == 422
    good = await api.client.post("/v1/organizations", json=org_body("Clinic E"), headers=headers)
    assert good.status_code == 201
    assert await count_orgs_named(api, "Clinic E") == 1


async def test_an_unusable_key_is_refused(api: Api):
    response = await api.client.post(
        "/v1/organizations",
        json=org_body("Clinic F"),
        headers={**api.admin, "Idempotency-Key": "x" * 256},
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "Idempotency-Key"


async def test_ten_concurrent_requests_with_one_key_create_one_organization(
    contended_server: LiveServer, database_url: str
):
    """The ten requests are held at the gate just before they claim the key, all ten at once,
    then race for the claim: one creates, nine wait for its commit and replay it. Serialized,
    the gate would never hold ten at once and the test fails."""
    admin = await contended_server.admin_key()
    name = f"Concurrent clinic {uuid.uuid4()}"
    headers = {**admin, "Idempotency-Key": f"burst-{uuid.uuid4()}"}
    async with (
        httpx.AsyncClient(base_url=contended_server.url, timeout=120) as client,
        Gate(database_url, "idempotency_keys", ["INSERT"]) as gate,
    ):
        responses = await race(
            gate,
            [
                client.post("/v1/organizations", json=org_body(name), headers=headers)
                for _ in range(10)
            ],
        )
    assert [r.status_code for r in responses] == [201] * 10
    replayed = sorted(r.headers.get("idempotent-replayed", "false") for r in responses)
    assert replayed == ["false"] + ["true"] * 9
    assert len({r.json()["id"] for r in responses}) == 1
    with psycopg.connect(database_url) as conn:
        count = conn.execute("SELECT count(*) FROM organizations WHERE name = %s", (name,))
        assert count.fetchone() == (1,)
        hashed = idempotency.key_hash(
            caller_fingerprint(headers["Authorization"]), headers["Idempotency-Key"]
        )
        keys = conn.execute("SELECT count(*) FROM idempotency_keys WHERE key_hash = %s", (hashed,))
        assert keys.fetchone() == (1,)
