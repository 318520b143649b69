"""What an anonymous visitor can reach besides the API: the docs can be turned off, /metrics
can be put behind a token or on its own port, and links Ensemble hands out start with
ENSEMBLE_PUBLIC_URL whatever Host header the request came with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker

from service.app import create_app
from service.core.settings import Settings
from tests.support import Api, ok, problem

MakeClient = Callable[..., httpx.AsyncClient]
TOKEN = "a-metrics-token-0123456789"


@pytest.fixture
def client_with(settings: Settings, engine: AsyncEngine, connection: AsyncConnection) -> MakeClient:
    """A client of an app with `overrides` applied to the suite's settings."""
    factory = async_sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )

    def make(**overrides: Any) -> httpx.AsyncClient:
        app = create_app(
            settings.model_copy(update=overrides), engine=engine, session_factory=factory
        )
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://ensemble.test"
        )

    return make


# --- docs --------------------------------------------------------------------------------------


async def test_the_docs_and_the_openapi_document_are_served_by_default(client_with: MakeClient):
    async with client_with() as http:
        answers = {path: await http.get(path) for path in ("/docs", "/redoc", "/openapi.json")}
    assert {path: a.status_code for path, a in answers.items()} == {
        "/docs": 200,
        "/redoc": 200,
        "/openapi.json": 200,
    }
    assert answers["/openapi.json"].json()["info"]["title"] == "Ensemble"


async def test_docs_false_turns_off_the_docs_and_the_openapi_document(client_with: MakeClient):
    async with client_with(docs=False) as http:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
            assert problem(await http.get(path), 404)["detail"] == f"No resource at {path}"
        # The API itself is untouched.
        assert ok(await http.get("/healthz")) == {"status": "ok"}


# --- /metrics ----------------------------------------------------------------------------------


async def test_metrics_without_a_token_set_are_open(client_with: MakeClient):
    async with client_with() as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert "ensemble_http_requests_total" in response.text


async def test_metrics_with_a_token_set_answer_only_to_the_token(client_with: MakeClient):
    async with client_with(metrics_token=SecretStr(TOKEN)) as http:
        missing = await http.get("/metrics")
        wrong = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}x"})
        basic = await http.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"})
        right = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    for refused in (missing, wrong, basic):
        body = problem(refused, 401)
        assert body["detail"] == (
            "Send the metrics token as 'Authorization: Bearer <ENSEMBLE_METRICS_TOKEN>'"
        )
        assert refused.headers["WWW-Authenticate"] == "Bearer"
        assert TOKEN not in refused.text
    assert right.status_code == 200
    assert right.headers["content-type"].startswith("text/plain")
    assert "ensemble_http_requests_total" in right.text


async def test_an_api_key_is_not_the_metrics_token(api: Api, client_with: MakeClient):
    async with client_with(metrics_token=SecretStr(TOKEN)) as http:
        problem(await http.get("/metrics", headers=api.admin), 401)


async def test_metrics_on_their_own_port_are_not_on_the_api(client_with: MakeClient):
    async with client_with(metrics_port=9100) as http:
        body = problem(await http.get("/metrics"), 404)
    assert body["detail"] == "Metrics are served on port 9100, not by the API"


@pytest.mark.parametrize(
    "token", ["", "short-token-15c", "x" * 501, "token with spaces ok?", "é" * 20]
)
def test_a_metrics_token_must_be_16_to_500_printable_characters(token: str):
    with pytest.raises(ValidationError, match="metrics_token"):
        Settings(metrics_token=token)


@pytest.mark.parametrize("token", ["x" * 16, "x" * 500])
def test_metrics_tokens_of_16_and_500_characters_are_accepted(token: str):
    settings = Settings(metrics_token=token)
    assert settings.metrics_token is not None
    assert settings.metrics_token.get_secret_value() == token


# --- public URLs -------------------------------------------------------------------------------


async def test_feed_urls_come_from_the_public_url_never_from_the_host_header(
    api: Api, client_with: MakeClient
):
    therapist = await api.make_therapist()
    spoofed = {**api.admin, "Host": "evil.example", "X-Forwarded-Host": "evil.example"}
    async with client_with(public_url="https://calendar.example.org/") as http:
        created = ok(
            await http.post(
                "/v1/calendar-feeds", headers=spoofed, json={"therapist_id": therapist["id"]}
            ),
            201,
        )
        rotated = ok(await http.post(f"/v1/calendar-feeds/{created['id']}/rotate", headers=spoofed))
    for feed in (created, rotated):
        assert feed["url"] == f"https://calendar.example.org/v1/calendar/{feed['token']}.ics"


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("https://ensemble.example.org", "https://ensemble.example.org"),
        ("https://ensemble.example.org/", "https://ensemble.example.org"),
        ("http://ensemble.internal:8080/", "http://ensemble.internal:8080"),
        ("  https://ensemble.example.org  ", "https://ensemble.example.org"),
    ],
)
def test_the_public_url_is_kept_without_a_trailing_slash(given: str, kept: str):
    assert Settings(public_url=given).public_url == kept


@pytest.mark.parametrize(
    "given",
    [
        "ensemble.example.org",
        "/v1",
        "ftp://ensemble.example.org",
        "https://",
        "https://ensemble.example.org/ensemble",
        "https://ensemble.example.org/?x=1",
        "https://ensemble.example.org/#top",
        "https://user:pass@ensemble.example.org",
        "https://ensemble.example.org:port",
        "https://ensemble.example.org\r\nX: y",
    ],
)
def test_a_public_url_that_is_not_an_absolute_http_url_with_only_a_host_is_refused(given: str):
    with pytest.raises(ValidationError, match="public_url"):
        Settings(public_url=given)
