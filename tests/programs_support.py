"""Factories for programs and sessions, on top of tests.support.Api."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import holidays

from tests.support import Api, ok


def quiet_weekday(weekday: int, *, weeks_ahead: int = 4, weeks: int = 4) -> date:
    """The first `weekday` (0 = Monday) at least `weeks_ahead` weeks from today (Edmonton)
    that starts `weeks` weeks free of Alberta holidays (the test organizations' region), so a
    weekly program from it keeps every occurrence. Dates in tests derive from it, never from
    a calendar year."""
    today = datetime.now(ZoneInfo("America/Edmonton")).date()
    day = today + timedelta(weeks=weeks_ahead)
    day += timedelta(days=(weekday - day.weekday()) % 7)
    for _ in range(260):
        span = [day + timedelta(days=n) for n in range(weeks * 7)]
        closed = holidays.country_holidays("CA", subdiv="AB", years={d.year for d in span})
        if not any(d in closed for d in span):
            return day
        day += timedelta(weeks=1)
    raise AssertionError(f"no {weeks} weeks without a holiday in five years")


FIRST_TUESDAY = quiet_weekday(1)  # the default programs' first session


def utc_text(day: date, at: str, zone: str = "America/Edmonton") -> str:
    """Local wall-clock `at` (HH:MM) on `day` in `zone`, as the API writes an instant."""
    local = datetime.combine(day, time.fromisoformat(at), ZoneInfo(zone))
    return local.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def weekly(day: date, at: str, count: int, zone: str = "America/Edmonton") -> list[str]:
    """The instants of `count` weekly sessions from `day` at local `at`."""
    return [utc_text(day + timedelta(weeks=n), at, zone) for n in range(count)]


async def make_program(
    api: Api,
    org: dict[str, Any],
    offering: dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    schedule = {
        "timezone": org["timezone"],
        "start_date": str(FIRST_TUESDAY),
        "start_time": "10:00",
        "rrule": "FREQ=WEEKLY;BYDAY=TU;COUNT=4",
        **overrides.pop("schedule", {}),
    }
    body = {
        "organization_id": org["id"],
        "offering_id": offering["id"],
        "title": "Calm classroom",
        "focus_areas": ["stress_anxiety"],
        "modality": "online",
        "video_url": "https://meet.example.org/calm",
        "participants": 1,
        "schedule": schedule,
        **overrides,
    }
    return ok(await api.client.post("/v1/programs", json=body, headers=headers or api.admin), 201)


async def confirmed_program(
    api: Api,
    org: dict[str, Any],
    offering: dict[str, Any],
    therapist: dict[str, Any],
    **overrides: Any,
) -> dict[str, Any]:
    program = await make_program(api, org, offering, **overrides)
    ok(
        await api.client.post(
            f"/v1/programs/{program['id']}/assign",
            json={"therapist_id": therapist["id"]},
            headers=api.admin,
        )
    )
    return ok(await api.client.post(f"/v1/programs/{program['id']}/confirm", headers=api.admin))


async def sessions_of(api: Api, program_id: str, **params: str) -> list[dict[str, Any]]:
    query = {"program_id": program_id, "limit": "200", **params}
    return ok(await api.client.get("/v1/sessions", params=query, headers=api.admin))["data"]
