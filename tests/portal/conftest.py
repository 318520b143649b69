"""The portal in a real browser: the app served on loopback (tests/conftest.serving_config),
one headless Chromium from the machine's packages for the whole session (Playwright's own
download is not reachable; `.ci/run` installs `chromium`), a small committed world built
through the API, and a screenshot of the page under test in test-artifacts/ when it fails."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import pytest_asyncio
import uvicorn

from service import bootstrap
from service.app import create_app
from service.core.clock import local_today
from service.core.settings import Settings
from tests.conftest import LiveServer, serving_config

playwright_api = pytest.importorskip("playwright.async_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ZONE = "America/Edmonton"


@dataclass
class PortalWorld:
    """Who signs in, and what they work on. `today` is the organizations' local date."""

    url: str
    today: date
    keys: dict[str, str]
    ids: dict[str, str]
    admin: httpx.Client

    def key_for(self, role: str) -> str:
        return self.keys[role]


def _made(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


def _build(server: LiveServer, admin_key: str) -> PortalWorld:
    admin = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30
    )
    today = local_today(ZONE)
    ids: dict[str, str] = {}
    for name, tag in (("Maple School", "org_a"), ("Birch Clinic", "org_b")):
        ids[tag] = _made(
            admin.post(
                "/v1/organizations",
                json={
                    "name": name,
                    "kind": "school",
                    "timezone": ZONE,
                    "currency": "CAD",
                    "tax_rate_bps": 500,
                    "tax_label": "GST",
                    "holiday_region": "CA-AB",
                },
            )
        )["id"]
    ids["room"] = _made(
        admin.post(
            f"/v1/organizations/{ids['org_a']}/locations",
            json={"name": "Music room 12", "address": "1 Maple Way", "timezone": ZONE},
        )
    )["id"]
    ids["therapist"] = _made(
        admin.post(
            "/v1/therapists",
            json={
                "name": "Noor Haddad",
                "email": "noor@portal.example",
                "specialties": ["focus_attention"],
                "timezone": ZONE,
                "max_weekly_minutes": 5000,
            },
        )
    )["id"]
    every_day = [
        {"weekday": d, "start": "07:00", "end": "21:00"}
        for d in ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
    ]
    _made(admin.put(f"/v1/therapists/{ids['therapist']}/availability", json=every_day))
    ids["offering"] = _made(
        admin.post(
            "/v1/offerings",
            json={
                "name": "Group rhythm (45 min)",
                "format": "group",
                "duration_minutes": 45,
                "rate_cents": 18000,
                "max_participants": 8,
            },
        )
    )["id"]
    keys = {"admin": admin_key}
    for role, scope in (
        ("coordinator", {"organization_id": ids["org_a"]}),
        ("coordinator_b", {"organization_id": ids["org_b"]}),
        ("therapist", {"therapist_id": ids["therapist"]}),
        ("finance", {}),
    ):
        keys[role] = _made(
            admin.post(
                "/v1/api-keys",
                json={"name": f"Portal {role}", "role": role.removesuffix("_b"), **scope},
            )
        )["key"]

    def program(org: str, title: str, start: date, rule: str, at: str = "09:00") -> str:
        return str(
            _made(
                admin.post(
                    "/v1/programs",
                    json={
                        "organization_id": ids[org],
                        "offering_id": ids["offering"],
                        "title": title,
                        "focus_areas": ["focus_attention"],
                        "modality": "online",
                        "video_url": "https://video.example/rhythm",
                        "participants": 5,
                        "schedule": {
                            "timezone": ZONE,
                            "start_date": start.isoformat(),
                            "start_time": at,
                            "rrule": rule,
                        },
                    },
                )
            )["id"]
        )

    # Under way since ten days ago, daily: sessions to complete, to bill and to cancel.
    ids["running"] = program(
        "org_a", "Morning rhythm", today - timedelta(days=10), "FREQ=DAILY;COUNT=20"
    )
    _made(
        admin.post(f"/v1/programs/{ids['running']}/assign", json={"therapist_id": ids["therapist"]})
    )
    _made(admin.post(f"/v1/programs/{ids['running']}/confirm"))
    sessions = _made(admin.get("/v1/sessions", params={"program_id": ids["running"], "limit": 50}))
    for session in sessions["data"][:2]:  # billable work for the finance clerk
        _made(admin.post(f"/v1/sessions/{session['id']}/complete", json={"attendance": 4}))
    ids["to_complete"] = sessions["data"][3]["id"]
    # Observations: a note planted by the admin (never shown to the coordinator), a delivered
    # session whose observation is due, and one completed together with its observation.
    ids["noted"] = sessions["data"][0]["id"]
    ids["to_observe"] = sessions["data"][1]["id"]
    ids["to_observe_at"] = (
        datetime.fromisoformat(sessions["data"][1]["starts_at"])
        .astimezone(ZoneInfo(ZONE))
        .strftime("%a %d %b %Y, %H:%M")
    )
    ids["to_complete_observed"] = sessions["data"][4]["id"]
    ids["to_complete_day"] = (today - timedelta(days=7)).isoformat()
    # Requested and waiting for a therapist (the admin's Assign), and another organization's.
    ids["waiting"] = program(
        "org_a",
        "Afternoon songwriting",
        today + timedelta(days=14),
        "FREQ=WEEKLY;BYDAY=WE;COUNT=6",
        at="15:00",
    )
    ids["foreign"] = program(
        "org_b", "Birch clinic circle", today + timedelta(days=14), "FREQ=WEEKLY;BYDAY=TU;COUNT=6"
    )
    return PortalWorld(url=server.url, today=today, keys=keys, ids=ids, admin=admin)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def portal(settings: Settings, database_url: str) -> AsyncIterator[PortalWorld]:
    """The app on loopback with the world committed (truncated when the module ends)."""
    config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
    with serving_config(config, settings, database_url) as server:
        admin_key = await bootstrap.create_key(settings, role="admin", name="Portal admin")
        world = _build(server, admin_key)
        try:
            yield world
        finally:
            world.admin.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Any]:
    """One headless Chromium for the whole session (each test gets its own context)."""
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine: apt-get install chromium (.ci/run does)")
    async with playwright_api.async_playwright() as driver:
        launched = await driver.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield launched
        await launched.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report


FAILED = pytest.StashKey[bool]()


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: Any, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A fresh browser context (no cookies) per test; its screenshot on failure."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    opened = await context.new_page()
    yield opened
    if request.node.stash.get(FAILED, False):
        ARTIFACTS.mkdir(exist_ok=True)
        name = re.sub(r"[^\w.-]+", "_", request.node.nodeid)
        await opened.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    await context.close()


async def follow(page: Any, control: Any) -> None:
    """Click a link or a submit button and return once the page it leads to has loaded.

    A click returns as soon as the browser has dispatched it; what is asked of the page next
    would otherwise be asked of the page being left (a heading not there yet, a message from
    before the submit). The portal has no script: every link and button here navigates."""
    async with page.expect_navigation():
        await control.click()


async def sign_in(page: Any, world: PortalWorld, role: str) -> None:
    await page.goto(f"{world.url}/app/login")
    await page.get_by_label("API key").fill(world.key_for(role))
    await follow(page, page.get_by_role("button", name="Sign in"))
    assert "/app/login" not in page.url, await page.content()
