"""Tenant isolation, the walk: every route of the app (straight from the app, so a route added
later is walked too), walked by a coordinator and a therapist with foreign ids and their own, and
by the provider's staff with real ids. A coordinator sees and changes only their own
organization and what hangs off it; a therapist sees only their own therapist record; anything
else is a 404 (or a 403 where the role never touches that kind of resource), lists are filtered,
and nothing answers 5xx. The same promises, one at a time, are in this package's other modules.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.tenant_isolation.walk import (
    Walker,
    app_of,
    coordinator_of_a,
    deletions_last,
    describe,
    is_hidden,
    is_refused,
    isolation_failures,
    note_failures,
    operations,
    provider_staff,
    refusal_failures,
    requests_for,
    send,
    therapist_1,
    webhook_failures,
)
from tests.tenant_isolation.world import World


async def test_the_walk_covers_every_operation_the_api_documents(
    client: httpx.AsyncClient,
) -> None:
    app = app_of(client)
    walked = {(op.method, op.path) for op in operations(app)}
    documented = {
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        for method in item
        if method.upper() in {"GET", "POST", "PUT", "PATCH", "DELETE"}
    }
    assert documented <= walked
    assert ("GET", "/v1/organizations/{organization_id}") in walked
    assert ("PUT", "/v1/therapists/{therapist_id}/availability") in walked


@pytest.mark.parametrize(
    "make_walker", [coordinator_of_a, therapist_1], ids=["coordinator", "therapist"]
)
async def test_a_scoped_key_walking_every_route_with_foreign_and_own_ids_sees_nothing_foreign(
    world: World, make_walker: Callable[[World], Walker]
) -> None:
    abroad = make_walker(world)
    client = world.api.client
    failures: list[str] = []
    for walker in (abroad, abroad.at_home()):
        for operation in operations(app_of(client)):
            for request in requests_for(operation, walker):
                response = await send(client, request, walker.headers)
                failures += isolation_failures(walker, request, response)
                if (
                    request.method == "GET"
                    and request.own_only
                    and not request.random_params
                    and not is_refused(walker, request)
                    and not is_hidden(walker, request)
                    and not response.is_success
                ):
                    # Guards the walk itself: a scope that refused everything would pass it.
                    failures.append(f"own resource refused: {describe(walker, request, response)}")
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize("role", ["admin", "finance"])
async def test_provider_staff_walking_every_route_with_real_ids_never_get_a_server_error(
    world: World, role: str
) -> None:
    walker = provider_staff(world, role)
    client = world.api.client
    failures: list[str] = []
    for operation in deletions_last(operations(app_of(client))):
        for request in requests_for(operation, walker):
            response = await send(client, request, walker.headers)
            failures += webhook_failures(walker, request, response)
            failures += note_failures(walker, request, response)
            if response.status_code >= 500:
                failures.append(f"server error: {describe(walker, request, response)}")
            elif is_refused(walker, request):
                failures += refusal_failures(walker, request, response)
            elif (
                role == "admin"
                and request.method == "GET"
                and not is_hidden(walker, request)
                and not request.random_params
                and not response.is_success
            ):
                failures.append(f"admin GET refused: {describe(walker, request, response)}")
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize(
    "make_walker",
    [coordinator_of_a, therapist_1, lambda w: provider_staff(w, "admin")],
    ids=["coordinator", "therapist", "provider staff"],
)
async def test_every_walker_knows_every_path_parameter_the_app_has(
    world: World, make_walker: Callable[[World], Walker]
) -> None:
    """A parameter no table knows is walked with a random UUID, which proves little: a route
    added later (webhook endpoints and deliveries, say) needs its ids in the tables."""
    walker = make_walker(world)
    unknown = {
        f"{request.method} {request.template}: {', '.join(request.random_params)}"
        for operation in operations(app_of(world.api.client))
        for request in requests_for(operation, walker)
        if request.random_params
    }
    assert unknown == set()
