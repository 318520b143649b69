"""No N+1, ever: every list route sends as many SQL statements for a page of 50 items as for a
page of 1 (issue 16, item 5).

The list routes are every GET whose 200 answers a `Page_...` schema in the app's own OpenAPI,
so a new list route is covered as soon as it exists (and fails here until it is given a way to
be asked below). One world is seeded with at least 50 items behind every list; each route is
then asked for `limit=1` and for `limit=50`, and the two statement counts must be equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.app import create_app
from tests.billing_support import complete, delivered_program, period, run
from tests.programs_support import confirmed_program, make_program, sessions_of
from tests.statement_count import counting
from tests.support import ALL_WEEK, Api, Headers, ok

ITEMS = 50


def list_routes() -> list[str]:
    """Every GET path whose success response is a page, from the app's OpenAPI."""
    spec = create_app().openapi()
    found = []
    for path, operations in spec["paths"].items():
        get = operations.get("get")
        if get is None:
            continue
        schema = get["responses"].get("200", {}).get("content", {}).get("application/json", {})
        if schema.get("schema", {}).get("$ref", "").split("/")[-1].startswith("Page_"):
            found.append(path)
    return sorted(found)


@dataclass(frozen=True)
class Ask:
    """How to ask one list route: the URL (path parameters filled) and as whom."""

    url: str
    headers: Headers
    params: dict[str, str]


async def seed(api: Api) -> dict[str, Ask]:
    """A world with at least ITEMS rows behind every list route, and how to ask each route."""
    endpoints = [
        ok(
            await api.client.post(
                "/v1/webhook-endpoints",
                json={"url": f"https://hooks.example.org/{n}", "events": ["*"]},
                headers=api.admin,
            ),
            201,
        )
        for n in range(ITEMS)
    ]
    orgs = [await api.make_org() for _ in range(ITEMS)]
    for _ in range(ITEMS):
        await api.make_location(orgs[0]["id"])
    offering = await api.make_offering()
    therapist = await api.make_therapist()
    now = datetime.now(UTC)
    for n in range(ITEMS):
        start = now + timedelta(days=400 + 2 * n)
        ok(
            await api.client.post(
                f"/v1/therapists/{therapist['id']}/time-off",
                json={
                    "starts_at": start.isoformat(),
                    "ends_at": (start + timedelta(hours=1)).isoformat(),
                    "reason": f"Away {n}",
                },
                headers=api.admin,
            ),
            201,
        )
    # One confirmed program of ITEMS daily sessions, staffed by `therapist`.
    program = await confirmed_program(
        api,
        orgs[0],
        offering,
        therapist,
        schedule={
            "start_date": str((now + timedelta(days=7)).date()),
            "start_time": "10:00",
            "rrule": f"FREQ=DAILY;COUNT={ITEMS}",
            "timezone": orgs[0]["timezone"],
        },
    )
    assert len(await sessions_of(api, program["id"])) == ITEMS
    # Draft programs, each assigned to a therapist of its own and to `therapist`'s colleague
    # `mine`, whose own view then lists them.
    mine = await api.make_therapist()
    for n in range(ITEMS):
        draft = await make_program(api, orgs[n], offering, title=f"Draft {n}")
        ok(
            await api.client.post(
                f"/v1/programs/{draft['id']}/assign",
                json={"therapist_id": mine["id"]},
                headers=api.admin,
            )
        )
    # Delivered work in every organization, billed by one run: an invoice each.
    for n in range(ITEMS):
        _, sessions = await delivered_program(api, orgs[n], sessions=1, days_ago=10)
        await complete(api, sessions[0])
    invoices = await run(api, *period())
    assert len(invoices) == ITEMS
    for _ in range(ITEMS):
        await api.key("finance")
    # A therapist with ITEMS completed sessions in the last days, none observed yet: five
    # programs of ten daily sessions at different hours.
    due = await api.make_therapist()
    for hour in range(ITEMS // 10):
        _program = await confirmed_program(
            api,
            orgs[1],
            offering,
            due,
            schedule={
                "start_date": str((now - timedelta(days=11)).date()),
                "start_time": f"{8 + 2 * hour:02d}:00",
                "rrule": "FREQ=DAILY;COUNT=10",
                "timezone": orgs[1]["timezone"],
            },
        )
        for session in await sessions_of(api, _program["id"]):
            await complete(api, session)
    # A therapist with one availability window, beside `therapist`'s seven (the availability
    # list is not paged: it is asked with few items and with many instead).
    one_window = await api.make_therapist(availability=ALL_WEEK[:1])

    admin = api.admin
    return {
        "/v1/me/programs": Ask("/v1/me/programs", await api.therapist_key(mine["id"]), {}),
        "/v1/me/sessions": Ask("/v1/me/sessions", await api.therapist_key(therapist["id"]), {}),
        "/v1/me/observations-due": Ask(
            "/v1/me/observations-due", await api.therapist_key(due["id"]), {}
        ),
        "/v1/api-keys": Ask("/v1/api-keys", admin, {}),
        "/v1/audit-events": Ask("/v1/audit-events", admin, {}),
        "/v1/organizations": Ask("/v1/organizations", admin, {}),
        "/v1/organizations/{organization_id}/locations": Ask(
            f"/v1/organizations/{orgs[0]['id']}/locations", admin, {}
        ),
        "/v1/therapists": Ask("/v1/therapists", admin, {}),
        "/v1/therapists/{therapist_id}/availability": Ask(
            "/v1/therapists/{therapist_id}/availability", admin, {}
        ),
        "/v1/therapists/{therapist_id}/time-off": Ask(
            f"/v1/therapists/{therapist['id']}/time-off", admin, {}
        ),
        "/v1/offerings": Ask("/v1/offerings", admin, {}),
        "/v1/programs": Ask("/v1/programs", admin, {}),
        "/v1/sessions": Ask("/v1/sessions", admin, {"program_id": program["id"]}),
        "/v1/invoices": Ask("/v1/invoices", admin, {}),
        "/v1/webhook-endpoints": Ask("/v1/webhook-endpoints", admin, {}),
        "/v1/webhook-endpoints/{endpoint_id}/deliveries": Ask(
            f"/v1/webhook-endpoints/{endpoints[0]['id']}/deliveries", admin, {}
        ),
        # Not paged: the therapist with one window, then the one with seven.
        "availability:few": Ask(f"/v1/therapists/{one_window['id']}/availability", admin, {}),
        "availability:many": Ask(f"/v1/therapists/{therapist['id']}/availability", admin, {}),
    }


async def statements(api: Api, engine: AsyncEngine, ask: Ask, **params: str) -> tuple[int, int]:
    """(statements sent, items listed) for one request."""
    with counting(engine) as seen:
        response = await api.client.get(
            ask.url, params={**ask.params, **params}, headers=ask.headers
        )
    page = ok(response)
    return seen.count, len(page["data"])


async def test_every_list_route_sends_as_many_statements_for_50_items_as_for_1(
    api: Api, engine: AsyncEngine
):
    asks = await seed(api)
    routes = list_routes()
    assert set(routes) <= set(asks), (
        f"list routes with no way to ask them: {set(routes) - set(asks)}"
    )

    measured: dict[str, tuple[int, int, int, int]] = {}
    for route in routes:
        if route == "/v1/therapists/{therapist_id}/availability":
            one, one_items = await statements(api, engine, asks["availability:few"])
            many, many_items = await statements(api, engine, asks["availability:many"])
        else:
            ask = asks[route]
            await statements(api, engine, ask, limit="1")  # warm: first-use work is not counted
            one, one_items = await statements(api, engine, ask, limit="1")
            many, many_items = await statements(api, engine, ask, limit=str(ITEMS))
        measured[route] = (one, one_items, many, many_items)

    table = "\n".join(
        f"{route:50} {one:3} statements for {n1:2} item(s), {many:3} for {n50:2}"
        for route, (one, n1, many, n50) in measured.items()
    )
    print("\n" + table)
    assert {route: m[1] for route, m in measured.items()} == dict.fromkeys(routes, 1), table
    assert {route: m[3] for route, m in measured.items() if "availability" not in route} == {
        route: ITEMS for route in routes if "availability" not in route
    }, table
    assert measured["/v1/therapists/{therapist_id}/availability"][3] == len(ALL_WEEK), table
    assert {route: m[0] for route, m in measured.items()} == {
        route: m[2] for route, m in measured.items()
    }, table


async def test_the_counter_sees_each_statement_once(
    engine: AsyncEngine, connection: AsyncConnection
):
    with counting(engine) as seen:
        await connection.execute(text("SELECT 1"))
        await connection.execute(text("SELECT 2"))
    await connection.execute(text("SELECT 3"))  # after the block: not counted

    assert seen.texts == ["SELECT 1", "SELECT 2"]
    assert seen.count == 2
