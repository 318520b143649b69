"""Signing in to the portal: the session cookie keeps the key unreadable and unforgeable
(encrypted under ENSEMBLE_SECRET_KEY), is HttpOnly, SameSite=Lax, scoped to /app and Secure in
production; it expires; every POST needs the session's CSRF token; the key is authenticated
again on every page load."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker

from routers.portal.signin import COOKIE, PURPOSE
from service.app import create_app
from service.core.encryption import keyring
from service.core.settings import Settings
from tests.support import Api

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def sign_in(client: httpx.AsyncClient, key: str) -> httpx.Response:
    login = await client.get("/app/login")
    token = CSRF.search(login.text)
    assert token is not None
    return await client.post("/app/login", data={"csrf": token[1], "api_key": key})


def secret_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


async def test_signing_in_sets_an_httponly_lax_cookie_that_does_not_carry_the_key(api: Api):
    org = await api.make_org()
    key = secret_of(await api.coordinator(org["id"]))
    answer = await sign_in(api.client, key)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/app/programs"
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith(f"{COOKIE}="))
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "path", "max-age", "samesite"} <= attributes
    assert "samesite=lax" in cookie.lower() and "path=/app" in cookie.lower()
    assert "secure" not in attributes  # development over http
    value = api.client.cookies[COOKIE].strip('"')
    assert value.startswith("enc1:")
    assert key not in value and key.removeprefix("ens_") not in value
    page = await api.client.get("/app/programs")
    assert page.status_code == 200
    assert "<h1>Programs</h1>" in page.text


async def test_a_wrong_key_stays_on_the_sign_in_page_with_the_reason_beside_the_field(api: Api):
    answer = await sign_in(api.client, "ens_not-a-key")
    assert answer.status_code == 401
    assert '<p class="error" id="e-api_key">That API key is unknown or has been revoked.</p>' in (
        answer.text
    )
    assert "ens_not-a-key" not in answer.text
    assert COOKIE not in api.client.cookies


async def test_a_post_without_the_sessions_csrf_token_is_refused(api: Api):
    org = await api.make_org()
    await sign_in(api.client, secret_of(await api.coordinator(org["id"])))
    answer = await api.client.post("/app/logout", data={"csrf": "forged"})
    assert answer.status_code == 403
    assert "The form has expired" in answer.text
    assert (await api.client.get("/app/programs")).status_code == 200  # still signed in


async def test_an_altered_or_expired_cookie_sends_the_visitor_to_sign_in(
    api: Api, settings: Settings
):
    org = await api.make_org()
    key = secret_of(await api.coordinator(org["id"]))
    api.client.cookies.set(COOKIE, "enc1:abcdef:AAAA", path="/app")
    answer = await api.client.get("/app/programs")
    assert (answer.status_code, answer.headers["location"]) == (303, "/app/login")
    expired: dict[str, Any] = {"key": key, "csrf": "x", "exp": int(time.time()) - 1}
    sealed = keyring(settings).encrypt_text(PURPOSE, json.dumps(expired))
    api.client.cookies.set(COOKIE, sealed, path="/app")
    answer = await api.client.get("/app/programs")
    assert (answer.status_code, answer.headers["location"]) == (303, "/app/login")


async def test_a_revoked_key_ends_the_session_on_the_next_page_load(api: Api):
    org = await api.make_org()
    made = await api.client.post(
        "/v1/api-keys",
        json={"name": "Leaving", "role": "coordinator", "organization_id": org["id"]},
        headers=api.admin,
    )
    await sign_in(api.client, made.json()["key"])
    assert (await api.client.get("/app/programs")).status_code == 200
    revoked = await api.client.delete(f"/v1/api-keys/{made.json()['id']}", headers=api.admin)
    assert revoked.status_code == 200
    answer = await api.client.get("/app/programs")
    assert (answer.status_code, answer.headers["location"]) == (303, "/app/login")


async def test_the_cookie_is_secure_in_production(
    api: Api, settings: Settings, engine: AsyncEngine, connection: AsyncConnection
):
    factory = async_sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    production = settings.model_copy(update={"environment": "production"})
    app = create_app(production, engine=engine, session_factory=factory)
    org = await api.make_org()
    key = secret_of(await api.coordinator(org["id"]))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://ensemble.test") as http:
        answer = await sign_in(http, key)
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith(f"{COOKIE}="))
    assert "secure" in {part.strip().lower() for part in cookie.split(";")}


async def test_the_portal_is_not_in_the_api_document(api: Api):
    spec = (await api.client.get("/openapi.json")).json()
    assert [path for path in spec["paths"] if path.startswith("/app")] == []
