"""Calendar feeds: parse the iCalendar back and compare it with the sessions."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import icalendar

from tests.programs_support import FIRST_TUESDAY, confirmed_program, sessions_of, utc_text
from tests.support import Api, ok, problem


async def feed_events(api: Api, url: str) -> dict[str, Any]:
    response = await api.client.get(urlparse(url).path)  # no API key: the token is the secret
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/calendar")
    calendar = icalendar.Calendar.from_ical(response.content)
    return {str(e["uid"]): e for e in calendar.walk("VEVENT")}


async def world(api: Api) -> dict[str, Any]:
    org = await api.make_org(name="Riverside School")
    offering = await api.make_offering(rate_cents=98765)
    therapist = await api.make_therapist()
    program = await confirmed_program(api, org, offering, therapist, title="Rhythm group")
    return {
        "org": org,
        "therapist": therapist,
        "program": program,
        "sessions": await sessions_of(api, program["id"]),
    }


async def test_a_therapist_feed_lists_each_session_with_its_time_place_and_status(api: Api):
    w = await world(api)
    feed = ok(
        await api.client.post(
            "/v1/calendar-feeds", headers=api.admin, json={"therapist_id": w["therapist"]["id"]}
        ),
        201,
    )
    assert feed["url"].endswith(f"/v1/calendar/{feed['token']}.ics")
    events = await feed_events(api, feed["url"])
    assert sorted(events) == sorted(f"{s['id']}@ensemble" for s in w["sessions"])
    for session in w["sessions"]:
        event = events[f"{session['id']}@ensemble"]
        assert event.decoded("dtstart") == datetime.fromisoformat(session["starts_at"])
        assert event.decoded("dtend") == datetime.fromisoformat(session["ends_at"])
        assert event.decoded("dtstart").tzinfo is not None
        assert str(event["summary"]) == "Rhythm group (Riverside School)"
        assert str(event["location"]) == "https://meet.example.org/calm"
        assert str(event["status"]) == "CONFIRMED"
        assert event.decoded("sequence") == 0


async def test_a_cancelled_or_moved_session_updates_the_same_event_with_a_higher_sequence(
    api: Api,
):
    w = await world(api)
    feed = ok(
        await api.client.post(
            "/v1/calendar-feeds", headers=api.admin, json={"organization_id": w["org"]["id"]}
        ),
        201,
    )
    first, second = w["sessions"][0], w["sessions"][1]
    ok(
        await api.client.post(
            f"/v1/sessions/{first['id']}/cancel", headers=api.admin, json={"reason": "Snow day"}
        )
    )
    # From the second Tuesday at 10:00 to the next day at noon.
    moved_to = utc_text(FIRST_TUESDAY + timedelta(days=8), "12:00")
    moved = ok(
        await api.client.patch(
            f"/v1/sessions/{second['id']}", headers=api.admin, json={"starts_at": moved_to}
        )
    )
    events = await feed_events(api, feed["url"])
    cancelled = events[f"{first['id']}@ensemble"]
    assert (str(cancelled["status"]), cancelled.decoded("sequence")) == ("CANCELLED", 1)
    rescheduled = events[f"{second['id']}@ensemble"]
    assert rescheduled.decoded("sequence") == 1
    assert rescheduled.decoded("dtstart") == datetime.fromisoformat(moved_to)
    assert moved["starts_at"] == moved_to


async def test_feeds_carry_no_money(api: Api):
    w = await world(api)
    feed = ok(
        await api.client.post(
            "/v1/calendar-feeds", headers=api.admin, json={"therapist_id": w["therapist"]["id"]}
        ),
        201,
    )
    body = (await api.client.get(urlparse(feed["url"]).path)).text
    assert "98765" not in body and "987.65" not in body


async def test_rotating_a_feed_retires_the_old_address_and_revoking_retires_it_for_good(
    api: Api,
):
    w = await world(api)
    feed = ok(
        await api.client.post(
            "/v1/calendar-feeds", headers=api.admin, json={"therapist_id": w["therapist"]["id"]}
        ),
        201,
    )
    rotated = ok(
        await api.client.post(f"/v1/calendar-feeds/{feed['id']}/rotate", headers=api.admin)
    )
    assert rotated["token"] != feed["token"]
    problem(await api.client.get(urlparse(feed["url"]).path), 404)
    assert len(await feed_events(api, rotated["url"])) == 4
    ok(await api.client.delete(f"/v1/calendar-feeds/{feed['id']}", headers=api.admin))
    problem(await api.client.get(urlparse(rotated["url"]).path), 404)
    problem(
        await api.client.post(f"/v1/calendar-feeds/{feed['id']}/rotate", headers=api.admin), 409
    )


async def test_an_organization_feed_shows_only_that_organizations_sessions(api: Api):
    w = await world(api)
    other_org = await api.make_org()
    other = await confirmed_program(
        api,
        other_org,
        await api.make_offering(),
        await api.make_therapist(),
    )
    feed = ok(
        await api.client.post(
            "/v1/calendar-feeds", headers=api.admin, json={"organization_id": w["org"]["id"]}
        ),
        201,
    )
    events = await feed_events(api, feed["url"])
    assert len(events) == 4
    assert not {f"{s['id']}@ensemble" for s in await sessions_of(api, other["id"])} & set(events)


async def test_coordinators_and_therapists_make_feeds_only_for_themselves(api: Api):
    w = await world(api)
    other_org = await api.make_org()
    other_therapist = await api.make_therapist()
    coordinator = await api.coordinator(w["org"]["id"])
    therapist = await api.therapist_key(w["therapist"]["id"])
    ok(
        await api.client.post(
            "/v1/calendar-feeds", headers=coordinator, json={"organization_id": w["org"]["id"]}
        ),
        201,
    )
    problem(
        await api.client.post(
            "/v1/calendar-feeds", headers=coordinator, json={"organization_id": other_org["id"]}
        ),
        404,
    )
    problem(
        await api.client.post(
            "/v1/calendar-feeds", headers=coordinator, json={"therapist_id": w["therapist"]["id"]}
        ),
        403,
    )
    own = ok(
        await api.client.post(
            "/v1/calendar-feeds", headers=therapist, json={"therapist_id": w["therapist"]["id"]}
        ),
        201,
    )
    problem(
        await api.client.post(
            "/v1/calendar-feeds", headers=therapist, json={"therapist_id": other_therapist["id"]}
        ),
        404,
    )
    problem(await api.client.delete(f"/v1/calendar-feeds/{own['id']}", headers=coordinator), 404)
    response = await api.client.post(
        "/v1/calendar-feeds",
        headers=api.admin,
        json={"therapist_id": w["therapist"]["id"], "organization_id": w["org"]["id"]},
    )
    assert response.status_code == 422


async def test_an_unknown_feed_token_is_a_404(api: Api):
    problem(await api.client.get("/v1/calendar/cal_nothing-here.ics"), 404)
