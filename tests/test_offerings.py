"""The catalog of offerings, and the list conventions every list shares (shown on this one)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support import Api, Headers, invalid_fields, ok, problem

GROUP_OFFERING = {
    "name": "Drumming for Focus",
    "format": "group",
    "duration_minutes": 45,
    "rate_cents": 18500,
    "currency": "CAD",
    "max_participants": 12,
    "cancellation_notice_hours": 24,
    "late_cancel_fee_percent": 50,
    "required_credentials": ["MTA"],
}


async def create_offering(
    api: Api, body: dict[str, Any], headers: Headers | None = None
) -> httpx.Response:
    return await api.client.post("/v1/offerings", json=body, headers=headers or api.admin)


async def patch_offering(
    api: Api, offering_id: str, body: dict[str, Any], headers: Headers | None = None
) -> httpx.Response:
    return await api.client.patch(
        f"/v1/offerings/{offering_id}", json=body, headers=headers or api.admin
    )


async def read_offering(api: Api, offering_id: str) -> dict[str, Any]:
    got: dict[str, Any] = ok(
        await api.client.get(f"/v1/offerings/{offering_id}", headers=api.admin)
    )
    return got


async def catalog_ids(api: Api) -> list[str]:
    page = ok(await api.client.get("/v1/offerings", headers=api.admin))
    return [offering["id"] for offering in page["data"]]


# Creating and reading


async def test_admin_creates_an_offering_with_every_field_and_reads_it_back(api: Api):
    created = ok(await create_offering(api, GROUP_OFFERING), 201)

    got = await read_offering(api, created["id"])

    assert got == created
    assert {k: got[k] for k in GROUP_OFFERING} == GROUP_OFFERING


async def test_new_offering_defaults_to_48_hours_notice_and_a_full_late_cancel_fee(api: Api):
    created = ok(
        await create_offering(
            api,
            {
                "name": "One-to-one",
                "format": "individual",
                "duration_minutes": 60,
                "rate_cents": 14000,
            },
        ),
        201,
    )

    assert created["cancellation_notice_hours"] == 48
    assert created["late_cancel_fee_percent"] == 100
    assert created["currency"] == "CAD"
    assert created["max_participants"] == 1
    assert created["required_credentials"] == []


async def test_individual_offering_for_two_participants_is_refused(api: Api):
    response = await create_offering(
        api, {**GROUP_OFFERING, "format": "individual", "max_participants": 2}
    )

    body = problem(response, 422)
    assert [e["field"] for e in body["errors"]] == ["max_participants"]
    assert body["errors"][0]["message"].endswith("must be 1 for an individual offering")


async def test_switching_to_individual_while_ten_may_attend_is_refused_and_changes_nothing(
    api: Api,
):
    offering = ok(await create_offering(api, {**GROUP_OFFERING, "max_participants": 10}), 201)

    response = await patch_offering(api, offering["id"], {"format": "individual", "name": "Solo"})

    assert invalid_fields(response) == ["max_participants"]
    assert await read_offering(api, offering["id"]) == offering


async def test_switching_to_individual_together_with_one_participant_is_accepted(api: Api):
    offering = ok(await create_offering(api, GROUP_OFFERING), 201)

    patched = ok(
        await patch_offering(api, offering["id"], {"format": "individual", "max_participants": 1})
    )

    assert patched["format"] == "individual"
    assert patched["max_participants"] == 1
    assert patched["rate_cents"] == GROUP_OFFERING["rate_cents"]


async def test_raising_participants_of_an_individual_offering_is_refused(api: Api):
    offering = ok(
        await create_offering(
            api, {**GROUP_OFFERING, "format": "individual", "max_participants": 1}
        ),
        201,
    )

    response = await patch_offering(api, offering["id"], {"max_participants": 3})

    assert invalid_fields(response) == ["max_participants"]
    assert await read_offering(api, offering["id"]) == offering


async def test_negative_rate_is_refused(api: Api):
    response = await create_offering(api, {**GROUP_OFFERING, "rate_cents": -1})

    assert invalid_fields(response) == ["rate_cents"]


async def test_fractional_rate_is_refused_because_money_is_whole_cents(api: Api):
    response = await create_offering(api, {**GROUP_OFFERING, "rate_cents": 185.5})

    assert invalid_fields(response) == ["rate_cents"]


async def test_duration_must_be_between_15_and_240_minutes(api: Api):
    too_short = await create_offering(api, {**GROUP_OFFERING, "duration_minutes": 14})
    too_long = await create_offering(api, {**GROUP_OFFERING, "duration_minutes": 241})
    shortest = await create_offering(api, {**GROUP_OFFERING, "duration_minutes": 15})
    longest = await create_offering(api, {**GROUP_OFFERING, "duration_minutes": 240})

    assert invalid_fields(too_short) == ["duration_minutes"]
    assert invalid_fields(too_long) == ["duration_minutes"]
    assert ok(shortest, 201)["duration_minutes"] == 15
    assert ok(longest, 201)["duration_minutes"] == 240


async def test_patching_duration_out_of_range_is_refused_and_changes_nothing(api: Api):
    offering = ok(await create_offering(api, GROUP_OFFERING), 201)

    response = await patch_offering(api, offering["id"], {"duration_minutes": 300})

    assert invalid_fields(response) == ["duration_minutes"]
    assert await read_offering(api, offering["id"]) == offering


async def test_late_cancel_fee_above_100_percent_is_refused(api: Api):
    response = await create_offering(api, {**GROUP_OFFERING, "late_cancel_fee_percent": 101})

    assert invalid_fields(response) == ["late_cancel_fee_percent"]


async def test_offering_in_a_zero_decimal_currency_is_refused(api: Api):
    response = await create_offering(api, {**GROUP_OFFERING, "currency": "JPY"})

    assert invalid_fields(response) == ["currency"]


async def test_refused_offering_is_not_added_to_the_catalog(api: Api):
    await api.make_offering()
    before = await catalog_ids(api)

    for bad in (
        {**GROUP_OFFERING, "rate_cents": -100},
        {**GROUP_OFFERING, "format": "individual", "max_participants": 2},
        {**GROUP_OFFERING, "discount": 10},
    ):
        problem(await create_offering(api, bad), 422)

    assert await catalog_ids(api) == before
    assert len(before) == 1


async def test_patch_changes_only_the_fields_sent_and_is_audited(api: Api):
    offering = ok(await create_offering(api, GROUP_OFFERING), 201)

    patched = ok(await patch_offering(api, offering["id"], {"rate_cents": 20000}))

    assert patched["rate_cents"] == 20000
    assert {k: patched[k] for k in GROUP_OFFERING if k != "rate_cents"} == {
        k: v for k, v in GROUP_OFFERING.items() if k != "rate_cents"
    }
    events = ok(
        await api.client.get(
            "/v1/audit-events", params={"entity_id": offering["id"]}, headers=api.admin
        )
    )["data"]
    assert [e["action"] for e in events] == ["offering.created", "offering.updated"]
    assert events[1]["before"]["rate_cents"] == 18500
    assert events[1]["after"]["rate_cents"] == 20000


async def test_unknown_offering_is_404(api: Api):
    response = await api.client.get(
        "/v1/offerings/00000000-0000-4000-8000-000000000000", headers=api.admin
    )

    problem(response, 404)


# Roles


async def test_staff_and_coordinators_read_the_catalog_but_therapists_see_no_prices(api: Api):
    offering = await api.make_offering()
    org = await api.make_org()
    therapist = await api.make_therapist()
    readers = {
        "admin": api.admin,
        "coordinator": await api.coordinator(org["id"]),
        "finance": await api.key("finance"),
    }

    for role, headers in readers.items():
        listed = ok(await api.client.get("/v1/offerings", headers=headers))
        got = ok(await api.client.get(f"/v1/offerings/{offering['id']}", headers=headers))
        assert [o["id"] for o in listed["data"]] == [offering["id"]], role
        assert got == offering, role
    therapist_key = await api.therapist_key(therapist["id"])
    problem(await api.client.get("/v1/offerings", headers=therapist_key), 403)
    problem(await api.client.get(f"/v1/offerings/{offering['id']}", headers=therapist_key), 403)


async def test_only_an_admin_changes_the_catalog(api: Api):
    offering = await api.make_offering()
    org = await api.make_org()
    therapist = await api.make_therapist()
    others = {
        "coordinator": await api.coordinator(org["id"]),
        "therapist": await api.therapist_key(therapist["id"]),
        "finance": await api.key("finance"),
    }

    for role, headers in others.items():
        created = await create_offering(api, GROUP_OFFERING, headers=headers)
        patched = await patch_offering(api, offering["id"], {"rate_cents": 1}, headers=headers)
        assert problem(created, 403)["title"] == "Not allowed for this role", role
        assert problem(patched, 403)["title"] == "Not allowed for this role", role

    assert await catalog_ids(api) == [offering["id"]]
    assert await read_offering(api, offering["id"]) == offering


# Pagination (the one helper every list uses)


async def test_following_next_cursor_visits_every_offering_once_in_creation_order(api: Api):
    created = [(await api.make_offering(name=f"Offering {n}"))["id"] for n in range(5)]
    seen: list[str] = []
    pages: list[int] = []
    cursor: str | None = None

    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        page = ok(await api.client.get("/v1/offerings", params=params, headers=api.admin))
        seen += [o["id"] for o in page["data"]]
        pages.append(len(page["data"]))
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == created
    assert pages == [2, 2, 1]


async def test_a_full_last_page_has_no_next_cursor(api: Api):
    for _ in range(2):
        await api.make_offering()

    page = ok(await api.client.get("/v1/offerings", params={"limit": 2}, headers=api.admin))

    assert len(page["data"]) == 2
    assert page["next_cursor"] is None


async def test_limit_must_be_between_1_and_200(api: Api):
    zero = await api.client.get("/v1/offerings", params={"limit": 0}, headers=api.admin)
    too_many = await api.client.get("/v1/offerings", params={"limit": 201}, headers=api.admin)
    most = await api.client.get("/v1/offerings", params={"limit": 200}, headers=api.admin)

    for response in (zero, too_many):
        body = problem(response, 422)
        assert [(e["field"], e["in"]) for e in body["errors"]] == [("limit", "query")]
    assert ok(most) == {"data": [], "next_cursor": None}


async def test_garbage_cursor_is_a_422_naming_cursor(api: Api):
    await api.make_offering()

    for garbage in ("not-a-cursor", "!!!!", "aGVsbG98d29ybGQ", "x" * 501):
        response = await api.client.get(
            "/v1/offerings", params={"cursor": garbage}, headers=api.admin
        )
        body = problem(response, 422)
        assert [(e["field"], e["in"]) for e in body["errors"]] == [("cursor", "query")], garbage


# Problem details


async def test_every_error_is_problem_json_with_type_title_status_and_detail(api: Api):
    offering = await api.make_offering()
    org = await api.make_org()
    coordinator = await api.coordinator(org["id"])

    responses = {
        401: await api.client.get("/v1/offerings"),
        403: await patch_offering(api, offering["id"], {"rate_cents": 1}, headers=coordinator),
        404: await api.client.get(
            "/v1/offerings/00000000-0000-4000-8000-000000000000", headers=api.admin
        ),
        405: await api.client.delete(f"/v1/offerings/{offering['id']}", headers=api.admin),
        422: await api.client.post(
            "/v1/offerings",
            content=b"{not json",
            headers={**api.admin, "Content-Type": "application/json"},
        ),
    }

    for status, response in responses.items():
        problem(response, status)


async def test_unknown_path_is_a_problem_json_404(api: Api):
    response = await api.client.get("/v1/nothing-here", headers=api.admin)

    problem(response, 404)
