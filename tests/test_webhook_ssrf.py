"""Webhooks never become a way into the provider's own network (SSRF): outside development a
webhook URL must be https and public, checked when it is registered and again when a delivery
connects."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from service.core import encryption
from service.core.settings import Settings
from service.integrations.address_guard import address_class
from service.integrations.webhook_delivery import Deliverer
from tests.conftest import AppFor
from tests.programs_support import make_program
from tests.support import Api, invalid_fields, ok, problem
from tests.webhook_receiver import Receiver
from tests.webhooks_support import deliveries, subscribe


@pytest_asyncio.fixture
async def public_only(
    settings: Settings, connection: AsyncConnection, db: AsyncSession, app_for: AppFor
) -> AsyncIterator[Api]:
    """The app as deployed: ENSEMBLE_WEBHOOK_ALLOW_PRIVATE unset (the tests' other apps set it,
    so their receivers can listen on loopback over http)."""
    factory = async_sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    app = app_for(settings.model_copy(update={"webhook_allow_private": False}), factory)
    assert app.state.settings.webhook_allow_private is False
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://ensemble.test") as http:
        yield await Api.start(http, db)


REFUSED = [
    ("http://example.com/hooks", "must use https"),
    ("https://127.0.0.1/", "loopback"),
    ("https://[::1]/", "loopback"),
    ("https://localhost/", "names this machine"),
    ("https://10.1.2.3/", "private"),
    ("https://172.16.0.5/", "private"),
    ("https://192.168.1.10/", "private"),
    ("https://[fc00::1]/", "private"),
    ("https://169.254.169.254/latest/meta-data", "metadata"),
    ("https://[fe80::1]/", "link-local"),
    ("https://metadata.google.internal/", "metadata service"),
    ("https://0.0.0.0/", "private"),
    ("https://[::ffff:127.0.0.1]/", "loopback"),
    ("https://user:pass@8.8.8.8/", "credentials"),
    # Other spellings of 127.0.0.1 that resolvers accept (inet_aton's short, decimal and hex
    # forms): not literals to `ipaddress`, so they are caught by resolving them.
    ("https://127.1/", "loopback"),
    ("https://2130706433/", "loopback"),
    ("https://0x7f000001/", "loopback"),
    ("https://LOCALHOST./", "names this machine"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED, ids=[url for url, _ in REFUSED])
async def test_a_webhook_url_that_is_not_https_and_public_is_422_naming_the_url(
    public_only: Api, url: str, reason: str
) -> None:
    response = await public_only.client.post(
        "/v1/webhook-endpoints", json={"url": url, "events": ["*"]}, headers=public_only.admin
    )

    assert invalid_fields(response) == ["url"]
    [error] = response.json()["errors"]
    assert reason in error["message"]
    assert "secret" not in response.json()
    listed = ok(await public_only.client.get("/v1/webhook-endpoints", headers=public_only.admin))
    assert listed["data"] == []


async def test_a_public_https_address_is_accepted(public_only: Api) -> None:
    response = await public_only.client.post(
        "/v1/webhook-endpoints",
        json={"url": "https://8.8.8.8/hooks", "events": ["invoice.paid"]},
        headers=public_only.admin,
    )
    created = ok(response, 201)
    assert created["url"] == "https://8.8.8.8/hooks"
    assert created["secret"].startswith("whsec_")


async def test_finance_is_refused_a_private_url_too(public_only: Api) -> None:
    finance = await public_only.key("finance")
    response = await public_only.client.post(
        "/v1/webhook-endpoints",
        json={"url": "https://10.0.0.1/hooks", "events": ["*"]},
        headers=finance,
    )
    assert invalid_fields(response) == ["url"]


async def test_a_coordinator_learns_nothing_about_addresses_only_403(public_only: Api) -> None:
    org = ok(
        await public_only.client.post(
            "/v1/organizations",
            json={"name": "SSRF School", "kind": "school", "timezone": "America/Edmonton"},
            headers=public_only.admin,
        ),
        201,
    )
    coordinator = await public_only.coordinator(org["id"])
    response = await public_only.client.post(
        "/v1/webhook-endpoints",
        json={"url": "https://127.0.0.1/", "events": ["*"]},
        headers=coordinator,
    )
    problem(response, 403)


async def test_a_delivery_to_a_loopback_address_is_refused_when_it_connects(
    api: Api, receiver: Receiver, connection: AsyncConnection
) -> None:
    """The endpoint got in while private addresses were allowed (or its name pointed somewhere
    public then); the deliverer of a deployment checks again, and sends nothing."""
    endpoint = await subscribe(api, receiver, ["program.requested"])
    org = await api.make_org()
    await make_program(api, org, await api.make_offering())
    factory = async_sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    strict = Deliverer(
        factory,
        allow_private=False,
        retry_delays=(timedelta(0),) * 3,
        keyring=encryption.keyring(Settings()),
    )
    try:
        report = await strict.deliver_due()
    finally:
        await strict.aclose()

    assert receiver.received == []
    assert report.as_dict() == {"sent": 0, "retried": 3, "failed": 1}
    [delivery] = await deliveries(api, endpoint["id"])
    assert (delivery["status"], delivery["attempt_count"]) == ("failed", 4)
    assert delivery["last_status_code"] is None
    assert len(delivery["attempts"]) == 4
    for attempt in delivery["attempts"]:
        assert attempt["status_code"] is None
        assert "refused" in attempt["error"]
        assert "127.0.0.1 is a loopback address" in attempt["error"]
    assert delivery["last_error"] == delivery["attempts"][-1]["error"]


async def test_the_same_loopback_delivery_goes_through_where_private_addresses_are_allowed(
    api: Api, receiver: Receiver, deliverer: Deliverer
) -> None:
    """The control for the test above: only the deliverer's setting differs."""
    await subscribe(api, receiver, ["program.requested"])
    org = await api.make_org()
    await make_program(api, org, await api.make_offering())
    assert (await deliverer.deliver_due()).as_dict() == {"sent": 1, "retried": 0, "failed": 0}
    assert len(receiver.accepted()) == 1


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("8.8.8.8", None),
        ("2001:4860:4860::8888", None),
        ("127.0.0.1", "a loopback address"),
        ("127.255.0.9", "a loopback address"),
        ("::1", "a loopback address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("::ffff:10.0.0.1", "a private address"),
        ("2002:7f00:1::", "a loopback address inside a 6to4 address"),
        ("2002:a9fe:a9fe::", "a cloud metadata address inside a 6to4 address"),
        ("2002:808:808::", None),
        ("64:ff9b::7f00:1", "a loopback address inside a NAT64 address"),
        ("64:ff9b::a00:1", "a private address inside a NAT64 address"),
        ("2001:0:4136:e378:8000:63bf:80ff:fefe", "a loopback address inside a Teredo address"),
        ("10.1.2.3", "a private address"),
        ("172.31.255.255", "a private address"),
        ("192.168.1.10", "a private address"),
        ("fc00::1", "a private address"),
        ("0.0.0.0", "a private address"),
        ("169.254.169.254", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("100.100.100.200", "a cloud metadata address"),
        ("169.254.1.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("100.64.0.1", "not a public address"),
        ("224.0.0.1", "not a public address"),
    ],
)
def test_address_class_names_why_an_address_is_not_public(address: str, reason: str | None) -> None:
    assert address_class(ipaddress.ip_address(address)) == reason
