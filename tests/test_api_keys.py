"""API keys, roles and who-am-I."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.api_keys import ApiKey
from service.core.auth import hash_secret
from tests.support import Api, bearer, ok


async def test_a_new_key_is_shown_once_and_stored_only_as_a_hash(api: Api, db: AsyncSession):
    created = ok(
        await api.client.post(
            "/v1/api-keys", json={"name": "Finance bot", "role": "finance"}, headers=api.admin
        ),
        201,
    )
    secret = created["key"]
    assert secret.startswith("ens_")
    assert len(secret) >= 4 + 43  # 32 random bytes, base64url

    row = (await db.execute(select(ApiKey).where(col(ApiKey.id) == created["id"]))).scalar_one()
    assert row.secret_hash == hash_secret(secret)
    assert secret not in (row.secret_hash, row.prefix)

    listed = ok(await api.client.get("/v1/api-keys", headers=api.admin))
    assert all("key" not in k and "secret_hash" not in k for k in listed["data"])
    assert created["id"] in [k["id"] for k in listed["data"]]


async def test_me_tells_each_caller_their_role_and_scope(api: Api):
    org = await api.make_org()
    therapist = await api.make_therapist()
    coordinator = await api.coordinator(org["id"])
    therapist_key = await api.therapist_key(therapist["id"])

    me = ok(await api.client.get("/v1/me", headers=coordinator))
    assert (me["role"], me["organization_id"], me["therapist_id"]) == (
        "coordinator",
        org["id"],
        None,
    )
    me = ok(await api.client.get("/v1/me", headers=therapist_key))
    assert (me["role"], me["organization_id"], me["therapist_id"]) == (
        "therapist",
        None,
        therapist["id"],
    )


async def test_a_revoked_key_fails_at_once_with_401(api: Api):
    org = await api.make_org()
    created = ok(
        await api.client.post(
            "/v1/api-keys",
            json={"name": "Coordinator", "role": "coordinator", "organization_id": org["id"]},
            headers=api.admin,
        ),
        201,
    )
    key = bearer(created["key"])
    ok(await api.client.get("/v1/me", headers=key))

    revoked = ok(await api.client.delete(f"/v1/api-keys/{created['id']}", headers=api.admin))
    assert revoked["revoked_at"] is not None

    response = await api.client.get("/v1/me", headers=key)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    again = await api.client.delete(f"/v1/api-keys/{created['id']}", headers=api.admin)
    assert again.status_code == 409


async def test_requests_without_a_valid_key_are_401(api: Api):
    for headers in (
        {},
        {"Authorization": "Bearer ens_not-a-real-key"},
        {"Authorization": "Basic x"},
    ):
        response = await api.client.get("/v1/organizations", headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["status"] == 401


async def test_key_scope_must_match_its_role(api: Api):
    org = await api.make_org()
    cases = [
        {"name": "c", "role": "coordinator"},
        {"name": "t", "role": "therapist"},
        {"name": "a", "role": "admin", "organization_id": org["id"]},
        {"name": "f", "role": "finance", "therapist_id": org["id"]},
        {"name": "x", "role": "superuser"},
    ]
    for body in cases:
        response = await api.client.post("/v1/api-keys", json=body, headers=api.admin)
        assert response.status_code == 422, body


async def test_a_coordinator_key_for_an_unknown_organization_is_refused(api: Api):
    response = await api.client.post(
        "/v1/api-keys",
        json={
            "name": "c",
            "role": "coordinator",
            "organization_id": "00000000-0000-4000-8000-000000000000",
        },
        headers=api.admin,
    )
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["organization_id"]


async def test_only_admins_manage_keys(api: Api):
    org = await api.make_org()
    finance = await api.key("finance")
    coordinator = await api.coordinator(org["id"])
    for headers in (finance, coordinator):
        assert (await api.client.get("/v1/api-keys", headers=headers)).status_code == 403
        response = await api.client.post(
            "/v1/api-keys", json={"name": "x", "role": "admin"}, headers=headers
        )
        assert response.status_code == 403


async def test_creating_and_revoking_keys_is_audited_without_the_secret(api: Api):
    created = ok(
        await api.client.post(
            "/v1/api-keys", json={"name": "Audited", "role": "finance"}, headers=api.admin
        ),
        201,
    )
    ok(await api.client.delete(f"/v1/api-keys/{created['id']}", headers=api.admin))
    events = ok(
        await api.client.get(f"/v1/audit-events?entity_id={created['id']}", headers=api.admin)
    )["data"]
    assert [e["action"] for e in events] == ["api_key.created", "api_key.revoked"]
    assert created["key"] not in str(events)
    assert events[1]["before"]["revoked_at"] is None
    assert events[1]["after"]["revoked_at"] is not None
