"""Utilization: numbers a test can recompute from the sessions themselves."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from tests.programs_support import confirmed_program, sessions_of
from tests.support import Api, invalid_fields, ok

EDMONTON = ZoneInfo("America/Edmonton")


def minutes(session: dict) -> int:
    length = datetime.fromisoformat(session["ends_at"]) - datetime.fromisoformat(
        session["starts_at"]
    )
    return int(length.total_seconds() // 60)


async def test_utilization_matches_the_sessions_availability_and_time_off(api: Api):
    today = datetime.now(EDMONTON).date()
    first = today - timedelta(days=10)
    nine_to_five = [
        {"weekday": d, "start": "09:00", "end": "17:00"}
        for d in ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
    ]
    therapist = await api.make_therapist(availability=nine_to_five)
    idle = await api.make_therapist(availability=[])
    second_day_nine = datetime.combine(
        first + timedelta(days=1), datetime.min.time(), EDMONTON
    ).replace(hour=9)
    ok(
        await api.client.post(
            f"/v1/therapists/{therapist['id']}/time-off",
            headers=api.admin,
            json={
                "starts_at": second_day_nine.isoformat(),
                "ends_at": (second_day_nine + timedelta(hours=1)).isoformat(),
            },
        ),
        201,
    )
    org, offering = await api.make_org(), await api.make_offering(duration_minutes=45)
    program = await confirmed_program(
        api,
        org,
        offering,
        therapist,
        schedule={"start_date": str(first), "start_time": "11:00", "rrule": "FREQ=DAILY;COUNT=4"},
    )
    sessions = await sessions_of(api, program["id"])
    ok(
        await api.client.post(
            f"/v1/sessions/{sessions[0]['id']}/complete", headers=api.admin, json={"attendance": 1}
        )
    )
    ok(await api.client.post(f"/v1/sessions/{sessions[1]['id']}/no-show", headers=api.admin))
    ok(
        await api.client.post(
            f"/v1/sessions/{sessions[2]['id']}/cancel", headers=api.admin, json={"reason": "flu"}
        )
    )
    # Sessions 0-2 fall inside the three-day period; session 3 falls after it.
    period_end = first + timedelta(days=2)
    report = ok(
        await api.client.get(
            f"/v1/reports/utilization?from={first}&to={period_end}", headers=api.admin
        )
    )["data"]
    rows = {r["therapist_id"]: r for r in report}

    in_period = [
        s
        for s in await sessions_of(api, program["id"])
        if first <= datetime.fromisoformat(s["starts_at"]).astimezone(EDMONTON).date() <= period_end
    ]
    assert len(in_period) == 3
    live = [s for s in in_period if s["status"] in ("scheduled", "completed", "no_show")]
    assert rows[therapist["id"]] == {
        "therapist_id": therapist["id"],
        "name": therapist["name"],
        "available_minutes": 3 * 8 * 60 - 60,
        "scheduled_minutes": sum(minutes(s) for s in live),
        "delivered_minutes": sum(minutes(s) for s in in_period if s["status"] == "completed"),
        "cancelled_sessions": sum(s["status"] == "cancelled" for s in in_period),
    }
    assert rows[therapist["id"]]["scheduled_minutes"] == 90
    assert rows[idle["id"]]["available_minutes"] == 0


async def test_utilization_needs_a_sane_period_and_staff_access(api: Api):
    today = datetime.now(ZoneInfo("America/Edmonton")).date()
    last_month = today - timedelta(days=31)
    response = await api.client.get(
        f"/v1/reports/utilization?from={today}&to={last_month}", headers=api.admin
    )
    assert invalid_fields(response) == ["to"]
    org = await api.make_org()
    coordinator = await api.coordinator(org["id"])
    response = await api.client.get(
        f"/v1/reports/utilization?from={last_month}&to={today}", headers=coordinator
    )
    assert response.status_code == 403


async def test_the_utilization_arithmetic_runs_off_the_event_loop_and_counts_overlaps_once(
    api: Api, monkeypatch
):
    """A year of windows against a thousand time-off rows must not stall other requests: the
    per-day arithmetic runs in a worker thread. Overlapping time off is subtracted once."""
    import threading

    from service.reports import utilization

    therapist = await api.make_therapist(
        availability=[{"weekday": "MO", "start": "09:00", "end": "17:00"}]
    )
    zone = ZoneInfo("America/Edmonton")
    today = datetime.now(zone).date()
    monday = today - timedelta(days=today.weekday() + 7)
    for hours in (range(9, 13), range(11, 15)):  # 09-13 and 11-15 overlap from 11 to 13
        ok(
            await api.client.post(
                f"/v1/therapists/{therapist['id']}/time-off",
                json={
                    "starts_at": datetime.combine(monday, datetime.min.time(), zone)
                    .replace(hour=hours.start)
                    .isoformat(),
                    "ends_at": datetime.combine(monday, datetime.min.time(), zone)
                    .replace(hour=hours.stop)
                    .isoformat(),
                },
                headers=api.admin,
            ),
            201,
        )
    threads: list[bool] = []
    computed = utilization._available_minutes

    def watched(*args, **kwargs):
        threads.append(threading.current_thread() is threading.main_thread())
        return computed(*args, **kwargs)

    monkeypatch.setattr(utilization, "_available_minutes", watched)
    report = ok(
        await api.client.get(
            "/v1/reports/utilization",
            params={"from": str(monday), "to": str(monday)},
            headers=api.admin,
        )
    )
    [row] = [r for r in report["data"] if r["therapist_id"] == therapist["id"]]
    assert row["available_minutes"] == 8 * 60 - 6 * 60  # 09:00-15:00 away, once
    assert threads and not any(threads)
