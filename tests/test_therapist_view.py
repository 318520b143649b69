"""The therapist's own view: their week with places and people, never money."""

from __future__ import annotations

from datetime import timedelta

from tests.programs_support import FIRST_TUESDAY, confirmed_program, sessions_of, utc_text
from tests.support import Api, ok


async def test_a_therapist_sees_their_own_sessions_with_where_and_for_whom_but_no_money(
    api: Api,
):
    org = await api.make_org(name="Riverside School")
    room = await api.make_location(org["id"], name="Music room", address="12 River St")
    offering = await api.make_offering(rate_cents=43210)
    me, colleague = await api.make_therapist(), await api.make_therapist()
    mine = await confirmed_program(
        api,
        org,
        offering,
        me,
        title="Drum circle",
        modality="in_person",
        location_id=room["id"],
        video_url=None,
        participants=6,
    )
    await confirmed_program(api, org, offering, colleague)
    key = await api.therapist_key(me["id"])

    sessions = ok(await api.client.get("/v1/me/sessions", headers=key))
    expected = await sessions_of(api, mine["id"])
    assert [s["id"] for s in sessions["data"]] == [s["id"] for s in expected]
    first = sessions["data"][0]
    assert first["organization_name"] == "Riverside School"
    assert first["program_title"] == "Drum circle"
    assert first["location"] == {
        "location_id": room["id"],
        "name": "Music room",
        "address": "12 River St",
    }
    assert first["participants"] == 6
    assert first["timezone"] == "America/Edmonton"
    programs = ok(await api.client.get("/v1/me/programs", headers=key))
    assert [p["id"] for p in programs["data"]] == [mine["id"]]
    assert programs["data"][0]["offering_name"] == offering["name"]
    for body in (sessions, programs):
        text = str(body)
        assert "43210" not in text and "rate_cents" not in text and "cents" not in text


async def test_a_therapist_filters_their_week_by_local_dates(api: Api):
    org, offering, me = await api.make_org(), await api.make_offering(), await api.make_therapist()
    await confirmed_program(api, org, offering, me)  # Tuesdays from FIRST_TUESDAY, 10:00
    key = await api.therapist_key(me["id"])
    monday = FIRST_TUESDAY + timedelta(days=6)  # the program's second week, Monday to Sunday
    week = ok(
        await api.client.get(
            f"/v1/me/sessions?from={monday}&to={monday + timedelta(days=6)}", headers=key
        )
    )
    assert [s["starts_at"] for s in week["data"]] == [utc_text(monday + timedelta(days=1), "10:00")]


async def test_other_roles_use_the_regular_lists_not_the_therapist_view(api: Api):
    org = await api.make_org()
    coordinator = await api.coordinator(org["id"])
    for path in ("/v1/me/sessions", "/v1/me/programs"):
        assert (await api.client.get(path, headers=coordinator)).status_code == 403
        assert (await api.client.get(path, headers=api.admin)).status_code == 403
