"""Therapists, their weekly availability and their time off."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import httpx

from tests.programs_support import FIRST_TUESDAY
from tests.support import Api, Headers, invalid_fields, ok, problem


def instant(timestamp: str) -> datetime:
    """An RFC 3339 timestamp as an aware datetime (the offset it is written in may vary)."""
    moment = datetime.fromisoformat(timestamp)
    assert moment.tzinfo is not None, timestamp
    return moment


async def put_availability(
    api: Api, therapist_id: str, windows: Any, headers: Headers | None = None
) -> httpx.Response:
    return await api.client.put(
        f"/v1/therapists/{therapist_id}/availability",
        json=windows,
        headers=headers or api.admin,
    )


async def availability_of(api: Api, therapist_id: str) -> list[dict[str, str]]:
    page = ok(
        await api.client.get(f"/v1/therapists/{therapist_id}/availability", headers=api.admin)
    )
    windows: list[dict[str, str]] = page["data"]
    return windows


async def add_time_off(
    api: Api, therapist_id: str, body: dict[str, Any], headers: Headers | None = None
) -> httpx.Response:
    return await api.client.post(
        f"/v1/therapists/{therapist_id}/time-off", json=body, headers=headers or api.admin
    )


# Creating and reading


async def test_admin_creates_a_therapist_and_reads_it_back(api: Api):
    body = {
        "name": "Maya Chen",
        "email": "Maya.Chen@Ensemble.example",
        "credentials": ["MTA", "NMT"],
        "specialties": ["stress_anxiety", "focus_attention"],
        "languages": ["en", "fr"],
        "timezone": "America/Vancouver",
        "max_weekly_minutes": 1200,
        "active": True,
    }

    created = ok(await api.client.post("/v1/therapists", json=body, headers=api.admin), 201)
    got = ok(await api.client.get(f"/v1/therapists/{created['id']}", headers=api.admin))

    assert got == created
    assert {k: got[k] for k in body} == {**body, "email": "maya.chen@ensemble.example"}


async def test_new_therapist_defaults_to_english_30_hours_a_week_and_active(api: Api):
    created = ok(
        await api.client.post(
            "/v1/therapists",
            json={"name": "Sam Ito", "email": "sam@ensemble.example", "timezone": "UTC"},
            headers=api.admin,
        ),
        201,
    )

    assert created["languages"] == ["en"]
    assert created["max_weekly_minutes"] == 1800
    assert created["active"] is True
    assert created["credentials"] == []
    assert created["specialties"] == []


async def test_duplicate_email_is_a_409_conflict_naming_email(api: Api):
    await api.make_therapist(email="maya@ensemble.example")
    listed_before = ok(await api.client.get("/v1/therapists", headers=api.admin))["data"]

    response = await api.client.post(
        "/v1/therapists",
        json={"name": "Other Maya", "email": "MAYA@ensemble.example", "timezone": "UTC"},
        headers=api.admin,
    )

    body = problem(response, 409)
    assert body["conflicts"] == [{"field": "email", "constraint": "uq_therapists_email"}]
    assert ok(await api.client.get("/v1/therapists", headers=api.admin))["data"] == listed_before


async def test_changing_email_to_another_therapists_is_a_409_and_changes_nothing(api: Api):
    await api.make_therapist(email="taken@ensemble.example")
    other = await api.make_therapist(email="free@ensemble.example")

    response = await api.client.patch(
        f"/v1/therapists/{other['id']}",
        json={"email": "taken@ensemble.example"},
        headers=api.admin,
    )

    problem(response, 409)
    got = ok(await api.client.get(f"/v1/therapists/{other['id']}", headers=api.admin))
    assert got["email"] == "free@ensemble.example"


async def test_specialty_outside_the_focus_area_list_is_refused(api: Api):
    response = await api.client.post(
        "/v1/therapists",
        json={
            "name": "Pat",
            "email": "pat@ensemble.example",
            "timezone": "UTC",
            "specialties": ["wellbeing", "astrology"],
        },
        headers=api.admin,
    )

    assert invalid_fields(response) == ["specialties.1"]


async def test_max_weekly_minutes_must_be_within_a_week(api: Api):
    base = {"name": "Pat", "timezone": "UTC"}

    negative = await api.client.post(
        "/v1/therapists",
        json={**base, "email": "a@ensemble.example", "max_weekly_minutes": -1},
        headers=api.admin,
    )
    too_many = await api.client.post(
        "/v1/therapists",
        json={**base, "email": "b@ensemble.example", "max_weekly_minutes": 10081},
        headers=api.admin,
    )
    whole_week = await api.client.post(
        "/v1/therapists",
        json={**base, "email": "c@ensemble.example", "max_weekly_minutes": 10080},
        headers=api.admin,
    )
    none = await api.client.post(
        "/v1/therapists",
        json={**base, "email": "d@ensemble.example", "max_weekly_minutes": 0},
        headers=api.admin,
    )

    assert invalid_fields(negative) == ["max_weekly_minutes"]
    assert invalid_fields(too_many) == ["max_weekly_minutes"]
    assert ok(whole_week, 201)["max_weekly_minutes"] == 10080
    assert ok(none, 201)["max_weekly_minutes"] == 0


async def test_admin_patches_a_therapist_changing_only_the_fields_sent(api: Api):
    therapist = await api.make_therapist(name="Old Name")

    patched = ok(
        await api.client.patch(
            f"/v1/therapists/{therapist['id']}",
            json={"active": False, "specialties": ["wellbeing"]},
            headers=api.admin,
        )
    )

    assert patched["active"] is False
    assert patched["specialties"] == ["wellbeing"]
    assert patched["name"] == "Old Name"
    assert patched["email"] == therapist["email"]
    assert patched["credentials"] == therapist["credentials"]


async def test_patch_with_null_for_a_required_therapist_field_is_refused(api: Api):
    therapist = await api.make_therapist()

    response = await api.client.patch(
        f"/v1/therapists/{therapist['id']}", json={"email": None}, headers=api.admin
    )

    assert invalid_fields(response) == ["email"]


async def test_active_filter_lists_only_matching_therapists(api: Api):
    active = await api.make_therapist()
    retired = await api.make_therapist(active=False)

    only_active = ok(await api.client.get("/v1/therapists?active=true", headers=api.admin))
    only_retired = ok(await api.client.get("/v1/therapists?active=false", headers=api.admin))

    assert [t["id"] for t in only_active["data"]] == [active["id"]]
    assert [t["id"] for t in only_retired["data"]] == [retired["id"]]


async def test_therapist_sees_only_themself(api: Api):
    me = await api.make_therapist()
    colleague = await api.make_therapist()
    as_me = await api.therapist_key(me["id"])

    listed = ok(await api.client.get("/v1/therapists", headers=as_me))
    other = await api.client.get(f"/v1/therapists/{colleague['id']}", headers=as_me)

    assert [t["id"] for t in listed["data"]] == [me["id"]]
    problem(other, 404)


async def test_therapist_cannot_change_their_own_profile(api: Api):
    me = await api.make_therapist()
    as_me = await api.therapist_key(me["id"])

    response = await api.client.patch(
        f"/v1/therapists/{me['id']}", json={"max_weekly_minutes": 10080}, headers=as_me
    )

    problem(response, 403)


async def test_coordinator_is_refused_the_therapist_roster(api: Api):
    org = await api.make_org()
    therapist = await api.make_therapist()
    coordinator = await api.coordinator(org["id"])

    for response in (
        await api.client.get("/v1/therapists", headers=coordinator),
        await api.client.get(f"/v1/therapists/{therapist['id']}", headers=coordinator),
        await api.client.post(
            "/v1/therapists",
            json={"name": "X", "email": "x@ensemble.example", "timezone": "UTC"},
            headers=coordinator,
        ),
    ):
        problem(response, 403)


async def test_finance_reads_therapists_but_cannot_create_them(api: Api):
    therapist = await api.make_therapist()
    finance = await api.key("finance")

    got = ok(await api.client.get(f"/v1/therapists/{therapist['id']}", headers=finance))
    created = await api.client.post(
        "/v1/therapists",
        json={"name": "X", "email": "x@ensemble.example", "timezone": "UTC"},
        headers=finance,
    )

    assert got == therapist
    problem(created, 403)


# Weekly availability


async def test_availability_round_trips_sorted_monday_first(api: Api):
    therapist = await api.make_therapist()
    windows = [
        {"weekday": "SU", "start": "10:00", "end": "12:00"},
        {"weekday": "WE", "start": "13:00", "end": "17:00"},
        {"weekday": "MO", "start": "13:00", "end": "17:00"},
        {"weekday": "MO", "start": "09:00", "end": "12:00"},
    ]

    saved = ok(await put_availability(api, therapist["id"], windows))

    expected = [
        {"weekday": "MO", "start": "09:00", "end": "12:00"},
        {"weekday": "MO", "start": "13:00", "end": "17:00"},
        {"weekday": "WE", "start": "13:00", "end": "17:00"},
        {"weekday": "SU", "start": "10:00", "end": "12:00"},
    ]
    assert saved == {"data": expected, "next_cursor": None}
    assert await availability_of(api, therapist["id"]) == expected


async def test_availability_read_back_can_be_put_again_unchanged(api: Api):
    therapist = await api.make_therapist()
    ok(
        await put_availability(
            api, therapist["id"], [{"weekday": "MO", "start": "09:00", "end": "17:00"}]
        )
    )
    read_back = await availability_of(api, therapist["id"])

    saved_again = ok(await put_availability(api, therapist["id"], read_back))

    assert saved_again["data"] == read_back


async def test_windows_that_touch_end_to_start_are_not_an_overlap(api: Api):
    therapist = await api.make_therapist()
    windows = [
        {"weekday": "TU", "start": "09:00", "end": "12:00"},
        {"weekday": "TU", "start": "12:00", "end": "17:00"},
    ]

    saved = ok(await put_availability(api, therapist["id"], windows))

    assert len(saved["data"]) == 2


async def test_putting_availability_replaces_the_previous_windows(api: Api):
    therapist = await api.make_therapist()
    ok(
        await put_availability(
            api,
            therapist["id"],
            [
                {"weekday": "MO", "start": "09:00", "end": "17:00"},
                {"weekday": "TU", "start": "09:00", "end": "17:00"},
            ],
        )
    )

    ok(
        await put_availability(
            api, therapist["id"], [{"weekday": "FR", "start": "08:30", "end": "11:45"}]
        )
    )

    assert await availability_of(api, therapist["id"]) == [
        {"weekday": "FR", "start": "08:30", "end": "11:45"}
    ]


async def test_putting_an_empty_list_clears_availability(api: Api):
    therapist = await api.make_therapist()
    ok(
        await put_availability(
            api, therapist["id"], [{"weekday": "MO", "start": "09:00", "end": "17:00"}]
        )
    )

    cleared = ok(await put_availability(api, therapist["id"], []))

    assert cleared["data"] == []
    assert await availability_of(api, therapist["id"]) == []


async def test_window_ending_before_it_starts_is_refused_naming_the_field(api: Api):
    therapist = await api.make_therapist()

    response = await put_availability(
        api,
        therapist["id"],
        [
            {"weekday": "MO", "start": "09:00", "end": "17:00"},
            {"weekday": "TU", "start": "17:00", "end": "09:00"},
        ],
    )

    body = problem(response, 422)
    assert body["errors"] == [
        {
            "field": "1.end",
            "message": "end must be after start",
            "type": "value_error",
            "in": "body",
        }
    ]


async def test_window_ending_when_it_starts_is_refused(api: Api):
    therapist = await api.make_therapist()

    response = await put_availability(
        api, therapist["id"], [{"weekday": "MO", "start": "09:00", "end": "09:00"}]
    )

    assert invalid_fields(response) == ["0.end"]


async def test_times_that_are_not_hh_mm_on_a_24_hour_clock_are_refused(api: Api):
    therapist = await api.make_therapist()

    response = await put_availability(
        api,
        therapist["id"],
        [
            {"weekday": "MO", "start": "09:00", "end": "25:00"},
            {"weekday": "TU", "start": "9am", "end": "17:00"},
        ],
    )

    body = problem(response, 422)
    assert sorted(invalid_fields(response)) == ["0.end", "1.start"]
    assert {e["field"]: e["message"] for e in body["errors"]} == {
        "0.end": "must be a time of day as HH:MM, 00:00 to 24:00",
        "1.start": "must be a time of day as HH:MM, 00:00 to 23:59",
    }


async def test_time_sent_as_a_number_instead_of_hh_mm_is_refused(api: Api):
    therapist = await api.make_therapist()

    response = await put_availability(
        api, therapist["id"], [{"weekday": "MO", "start": 32400, "end": "17:00"}]
    )

    assert invalid_fields(response) == ["0.start"]


async def test_unknown_weekday_is_refused(api: Api):
    therapist = await api.make_therapist()

    response = await put_availability(
        api, therapist["id"], [{"weekday": "Monday", "start": "09:00", "end": "17:00"}]
    )

    assert invalid_fields(response) == ["0.weekday"]


async def test_availability_must_be_a_json_list(api: Api):
    therapist = await api.make_therapist()

    response = await put_availability(
        api, therapist["id"], {"weekday": "MO", "start": "09:00", "end": "17:00"}
    )

    problem(response, 422)


async def test_overlapping_windows_on_the_same_day_are_refused_and_nothing_changes(api: Api):
    therapist = await api.make_therapist()
    kept = [{"weekday": "WE", "start": "09:00", "end": "10:00"}]
    ok(await put_availability(api, therapist["id"], kept))

    response = await put_availability(
        api,
        therapist["id"],
        [
            {"weekday": "MO", "start": "09:00", "end": "12:00"},
            {"weekday": "TU", "start": "10:00", "end": "11:00"},
            {"weekday": "MO", "start": "11:00", "end": "13:00"},
        ],
    )

    body = problem(response, 422)
    [error] = body["errors"]
    assert (error["field"], error["type"], error["in"]) == ("2.start", "overlap", "body")
    assert "MO" in error["message"]
    assert "09:00-12:00" in error["message"]
    assert await availability_of(api, therapist["id"]) == kept


async def test_a_window_inside_another_on_the_same_day_is_an_overlap(api: Api):
    therapist = await api.make_therapist()

    response = await put_availability(
        api,
        therapist["id"],
        [
            {"weekday": "TH", "start": "09:00", "end": "17:00"},
            {"weekday": "TH", "start": "10:00", "end": "11:00"},
            {"weekday": "TH", "start": "13:00", "end": "14:00"},
        ],
    )

    assert sorted(invalid_fields(response)) == ["1.start", "2.start"]


async def test_therapist_keeps_their_own_availability_but_not_a_colleagues(api: Api):
    me = await api.make_therapist(availability=[])
    colleague = await api.make_therapist(availability=[])
    as_me = await api.therapist_key(me["id"])
    window = [{"weekday": "MO", "start": "09:00", "end": "17:00"}]

    mine = await put_availability(api, me["id"], window, headers=as_me)
    theirs = await put_availability(api, colleague["id"], window, headers=as_me)
    read_theirs = await api.client.get(
        f"/v1/therapists/{colleague['id']}/availability", headers=as_me
    )

    assert ok(mine)["data"] == window
    problem(theirs, 404)
    problem(read_theirs, 404)
    assert await availability_of(api, colleague["id"]) == []


async def test_coordinator_and_finance_cannot_change_availability(api: Api):
    org = await api.make_org()
    therapist = await api.make_therapist(availability=[])
    coordinator = await api.coordinator(org["id"])
    finance = await api.key("finance")
    window = [{"weekday": "MO", "start": "09:00", "end": "17:00"}]

    problem(await put_availability(api, therapist["id"], window, headers=coordinator), 403)
    problem(await put_availability(api, therapist["id"], window, headers=finance), 403)
    assert await availability_of(api, therapist["id"]) == []


# Time off


def day(n: int) -> date:
    """A date `n` days after the tests' first future Tuesday (never a fixed year)."""
    return FIRST_TUESDAY + timedelta(days=n)


async def test_time_off_is_recorded_and_read_back(api: Api):
    therapist = await api.make_therapist()

    created = ok(
        await add_time_off(
            api,
            therapist["id"],
            {
                "starts_at": f"{day(0)}T00:00:00-06:00",
                "ends_at": f"{day(14)}T00:00:00-06:00",
                "reason": "Summer holiday",
            },
        ),
        201,
    )
    listed = ok(
        await api.client.get(f"/v1/therapists/{therapist['id']}/time-off", headers=api.admin)
    )

    assert created["therapist_id"] == therapist["id"]
    assert created["reason"] == "Summer holiday"
    assert instant(created["starts_at"]) == datetime.combine(day(0), time(6), UTC)
    assert instant(created["ends_at"]) == datetime.combine(day(14), time(6), UTC)
    [read_back] = listed["data"]
    assert read_back["id"] == created["id"]
    assert instant(read_back["starts_at"]) == instant(created["starts_at"])
    assert instant(read_back["ends_at"]) == instant(created["ends_at"])
    assert listed["next_cursor"] is None


async def test_time_off_ending_before_it_starts_is_refused_naming_ends_at(api: Api):
    therapist = await api.make_therapist()

    response = await add_time_off(
        api,
        therapist["id"],
        {"starts_at": f"{day(14)}T00:00:00Z", "ends_at": f"{day(0)}T00:00:00Z"},
    )

    body = problem(response, 422)
    assert body["errors"] == [
        {
            "field": "ends_at",
            "message": "ends_at must be after starts_at",
            "type": "value_error",
            "in": "body",
        }
    ]


async def test_time_off_ending_the_moment_it_starts_is_refused(api: Api):
    therapist = await api.make_therapist()

    response = await add_time_off(
        api,
        therapist["id"],
        {"starts_at": f"{day(0)}T09:00:00+02:00", "ends_at": f"{day(0)}T07:00:00Z"},
    )

    assert invalid_fields(response) == ["ends_at"]


async def test_time_off_without_a_utc_offset_is_refused(api: Api):
    therapist = await api.make_therapist()

    response = await add_time_off(
        api,
        therapist["id"],
        {"starts_at": f"{day(0)}T00:00:00", "ends_at": f"{day(14)}T00:00:00"},
    )

    body = problem(response, 422)
    assert sorted(invalid_fields(response)) == ["ends_at", "starts_at"]
    assert {e["type"] for e in body["errors"]} == {"timezone_aware"}
    listed = ok(
        await api.client.get(f"/v1/therapists/{therapist['id']}/time-off", headers=api.admin)
    )
    assert listed["data"] == []


async def test_time_off_at_the_edges_of_the_calendar_is_a_422_not_a_500(api: Api):
    therapist = await api.make_therapist()

    before_year_one = await add_time_off(
        api,
        therapist["id"],
        {"starts_at": "0001-01-01T00:00:00+01:00", "ends_at": "0001-01-02T00:00:00+01:00"},
    )
    after_year_9999 = await add_time_off(
        api,
        therapist["id"],
        {"starts_at": "9999-12-31T20:00:00-01:00", "ends_at": "9999-12-31T23:59:59-01:00"},
    )

    assert invalid_fields(before_year_one) == ["starts_at", "ends_at"]
    assert invalid_fields(after_year_9999) == ["starts_at", "ends_at"]


async def test_time_off_lists_page_in_creation_order(api: Api):
    therapist = await api.make_therapist()
    created = [
        ok(
            await add_time_off(
                api,
                therapist["id"],
                {
                    "starts_at": f"{day(7 * week)}T00:00:00Z",
                    "ends_at": f"{day(7 * week + 1)}T00:00:00Z",
                },
            ),
            201,
        )
        for week in (0, 1, 2)
    ]
    url = f"/v1/therapists/{therapist['id']}/time-off"

    first = ok(await api.client.get(url, params={"limit": 2}, headers=api.admin))
    second = ok(
        await api.client.get(
            url, params={"limit": 2, "cursor": first["next_cursor"]}, headers=api.admin
        )
    )

    assert first["data"] == created[:2]
    assert first["next_cursor"] is not None
    assert second == {"data": created[2:], "next_cursor": None}


async def test_therapist_records_their_own_time_off_but_not_a_colleagues(api: Api):
    me = await api.make_therapist()
    colleague = await api.make_therapist()
    as_me = await api.therapist_key(me["id"])
    body = {"starts_at": f"{day(0)}T00:00:00Z", "ends_at": f"{day(1)}T00:00:00Z"}

    mine = await add_time_off(api, me["id"], body, headers=as_me)
    theirs = await add_time_off(api, colleague["id"], body, headers=as_me)

    assert ok(mine, 201)["therapist_id"] == me["id"]
    problem(theirs, 404)


async def test_coordinator_cannot_record_time_off(api: Api):
    org = await api.make_org()
    therapist = await api.make_therapist()
    coordinator = await api.coordinator(org["id"])

    response = await add_time_off(
        api,
        therapist["id"],
        {"starts_at": f"{day(0)}T00:00:00Z", "ends_at": f"{day(1)}T00:00:00Z"},
        headers=coordinator,
    )

    problem(response, 403)
