"""Tenant isolation in the portal: every page of /app (straight from the app, so a page added
later is walked too), walked by a signed-in coordinator of A and therapist T1 with another
tenant's ids in the path, answers what the API answers for that id (the 404 page; a 403 where
the role never touches that kind of resource), and no page they can open shows another
tenant's data."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest

from tests.tenant_isolation.walk import (
    PATH_PARAMETER,
    Walker,
    app_of,
    coordinator_of_a,
    portal_pages,
    therapist_1,
)
from tests.tenant_isolation.world import World

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
# Path parameters that name no resource: an action of the invoice page.
NOT_IDS = {"action": "issue"}


async def signed_in(client: httpx.AsyncClient, walker: Walker) -> str:
    """Signs the client in with the walker's key (the cookies stay in the client's jar) and
    answers the session's CSRF token."""
    client.cookies.clear()
    login = await client.get("/app/login")
    key = walker.headers["Authorization"].removeprefix("Bearer ")
    token = CSRF.search(login.text)
    assert token is not None
    answer = await client.post(
        "/app/login",
        data={"csrf": token[1], "api_key": key},
    )
    assert answer.status_code == 303, answer.text
    home = await client.get(answer.headers["location"])
    assert home.status_code == 200, home.text
    csrf = CSRF.search(home.text)
    assert csrf is not None
    return csrf[1]


def test_the_walk_knows_the_portal_pages(client: httpx.AsyncClient) -> None:
    pages = portal_pages(app_of(client))
    assert ("GET", "/app/programs/{program_id}") in pages
    assert ("POST", "/app/sessions/{session_id}/complete") in pages
    assert ("GET", "/v1/programs") not in pages


@pytest.mark.parametrize(
    "make_walker", [coordinator_of_a, therapist_1], ids=["coordinator", "therapist"]
)
async def test_a_signed_in_visitor_editing_the_url_to_another_tenants_resource_gets_404(
    world: World, make_walker: Callable[[World], Walker]
) -> None:
    walker = make_walker(world)
    client = world.api.client
    csrf = await signed_in(client, walker)
    failures = []
    for method, template in portal_pages(app_of(client)):
        names = PATH_PARAMETER.findall(template)
        if not names:
            continue
        path = template
        for name in names:
            path = path.replace("{" + name + "}", NOT_IDS.get(name) or walker.ids[name])
        form = {"csrf": csrf} if method == "POST" else None
        answer = await client.request(method, path, data=form)
        # As the API answers for that foreign id: 404, or 403 where the role never touches
        # that kind of resource (a therapist and a program's page, which carries money).
        allowed = walker.expected_for_foreign.get(names[0], frozenset({404}))
        if answer.status_code not in allowed:
            failures.append(f"{walker.role}: {method} {template} -> {answer.status_code}")
        for marker, what in walker.foreign_markers.items():
            if marker in answer.text and marker not in path:
                failures.append(f"{walker.role}: {method} {template} shows {what}")
    assert failures == []


@pytest.mark.parametrize(
    "make_walker", [coordinator_of_a, therapist_1], ids=["coordinator", "therapist"]
)
async def test_no_portal_page_shows_another_tenants_data(
    world: World, make_walker: Callable[[World], Walker]
) -> None:
    walker = make_walker(world)
    client = world.api.client
    await signed_in(client, walker)
    failures = []
    for method, template in portal_pages(app_of(client)):
        if method != "GET" or PATH_PARAMETER.search(template):
            continue
        answer = await client.get(template)
        if answer.status_code >= 500:
            failures.append(f"{walker.role}: GET {template} -> {answer.status_code}")
        for marker, what in walker.foreign_markers.items():
            if marker in answer.text:
                failures.append(f"{walker.role}: GET {template} shows {what}")
    assert failures == []
