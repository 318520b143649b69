"""Rate limits: per API key, per address for anonymous and failed-key requests, shared by every
replica through Redis, and open (not failing) when Redis is away."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker

from service.app import create_app
from service.core.settings import Settings
from tests.support import Api, problem

MakeClient = Callable[..., httpx.AsyncClient]


@pytest.fixture
def limited(
    settings: Settings, engine: AsyncEngine, connection: AsyncConnection
) -> Callable[..., httpx.AsyncClient]:
    """Clients of apps with rate limits on, each with the limits given; apps made with the same
    `prefix` share their counters (as replicas do), others never see each other's."""
    factory = async_sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    default_prefix = f"test-{uuid.uuid4().hex}"

    def make(prefix: str = default_prefix, **limits: str) -> httpx.AsyncClient:
        app = create_app(
            settings.model_copy(
                update={"rate_limits": True, "rate_limit_prefix": prefix, **limits}
            ),
            engine=engine,
            session_factory=factory,
        )
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("203.0.113.7", 40000)),
            base_url="http://ensemble.test",
        )

    return make


async def test_a_key_over_its_limit_gets_429_with_the_ratelimit_fields(
    api: Api, limited: MakeClient
):
    async with limited(rate_limit="3/minute") as http:
        answers = [await http.get("/v1/me", headers=api.admin) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert {a.headers["RateLimit-Limit"] for a in answers} == {"3"}
    assert all(0 <= int(a.headers["RateLimit-Reset"]) <= 60 for a in answers)
    refused = problem(answers[3], 429)
    assert refused["type"].endswith("/rate-limited")
    assert 1 <= int(answers[3].headers["Retry-After"]) <= 60


async def test_two_keys_have_their_own_counters(api: Api, limited: MakeClient):
    finance = await api.key("finance")
    async with limited(rate_limit="2/minute") as http:
        mine = [(await http.get("/v1/me", headers=api.admin)).status_code for _ in range(3)]
        theirs = (await http.get("/v1/me", headers=finance)).status_code
    assert (mine, theirs) == ([200, 200, 429], 200)


async def test_anonymous_requests_are_limited_per_address_without_stopping_good_keys(
    api: Api, limited: MakeClient
):
    async with limited(rate_limit_anonymous="3/minute") as http:
        anonymous = [(await http.get("/v1/me")).status_code for _ in range(4)]
        keyed = (await http.get("/v1/me", headers=api.admin)).status_code
    assert (anonymous, keyed) == ([401, 401, 401, 429], 200)


async def test_an_address_whose_keys_keep_failing_is_stopped_before_the_next_lookup(
    api: Api, limited: MakeClient
):
    async with limited(rate_limit_anonymous="3/minute") as http:
        guesses = [
            await http.get("/v1/me", headers={"Authorization": f"Bearer ens_{uuid.uuid4().hex}"})
            for _ in range(4)
        ]
        # Guessing from this address has used its three: even a real key from it waits.
        real = await http.get("/v1/me", headers=api.admin)
    assert [g.status_code for g in guesses] == [401, 401, 401, 429]
    problem(guesses[3], 429)
    problem(real, 429)


async def test_replicas_share_their_counters(api: Api, limited: MakeClient):
    shared = f"test-{uuid.uuid4().hex}"
    async with (
        limited(shared, rate_limit="3/minute") as one,
        limited(shared, rate_limit="3/minute") as two,
    ):
        statuses = [
            (await one.get("/v1/me", headers=api.admin)).status_code,
            (await two.get("/v1/me", headers=api.admin)).status_code,
            (await one.get("/v1/me", headers=api.admin)).status_code,
            (await two.get("/v1/me", headers=api.admin)).status_code,
        ]
    assert statuses == [200, 200, 200, 429]


async def test_an_unreachable_store_lets_requests_through_with_a_log_line_and_a_metric(
    api: Api, limited: MakeClient, caplog: pytest.LogCaptureFixture
):
    before = REGISTRY.get_sample_value("ensemble_rate_limit_store_failures_total") or 0.0
    caplog.set_level(logging.WARNING, logger="routers.rate_limit")
    async with limited(rate_limit="1/minute", rate_limit_storage="redis://127.0.0.1:1/0") as http:
        answers = [await http.get("/v1/me", headers=api.admin) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert all("RateLimit-Limit" not in a.headers for a in answers)
    after = REGISTRY.get_sample_value("ensemble_rate_limit_store_failures_total")
    assert after == before + 1  # then the store is left alone for a few seconds
    assert [r.message.split(" (")[0] for r in caplog.records] == ["rate limit store unavailable"]


async def test_probes_are_never_limited(limited: MakeClient):
    async with limited(rate_limit_anonymous="1/minute") as http:
        statuses = [(await http.get("/healthz")).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]


async def test_a_portal_session_is_counted_like_its_key_and_a_dead_one_like_a_failed_key(
    api: Api, limited: MakeClient
):
    async with limited(rate_limit="3/minute", rate_limit_anonymous="2/minute") as http:
        login = await http.get("/app/login")  # anonymous: 1 of the address's 2
        csrf = login.text.split('name="csrf" value="')[1].split('"')[0]
        key = api.admin["Authorization"].removeprefix("Bearer ")
        signed_in = await http.post("/app/login", data={"csrf": csrf, "api_key": key})  # 2 of 2
        pages = [await http.get("/app/programs") for _ in range(4)]
        http.cookies.clear()
        forged = []
        for n in range(3):
            http.cookies.set("ensemble_portal", f"enc1:x:{n}", path="/app")
            forged.append(await http.get("/app/programs"))
    assert signed_in.status_code == 303
    # The session has the key's limit (3), not the address's (2), which sign-in used up.
    assert [p.status_code for p in pages] == [200, 200, 200, 429]
    assert pages[0].headers["RateLimit-Limit"] == "3"
    # Cookies that sign nobody in count against the address, as failed keys do.
    assert [f.status_code for f in forged] == [303, 303, 429]
