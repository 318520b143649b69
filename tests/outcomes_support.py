"""Delivered programs with observations, made through the API (observations and outcomes)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.programs_support import confirmed_program, sessions_of
from tests.support import Api, Headers, ok

FOCUS_AREAS = ["stress_anxiety", "wellbeing"]


@dataclass
class Delivered:
    org: dict[str, Any]
    program: dict[str, Any]
    therapist: dict[str, Any]
    therapist_key: Headers
    sessions: list[dict[str, Any]]


async def delivered(
    api: Api,
    *,
    org: dict[str, Any] | None = None,
    sessions: int = 2,
    days_ago: int = 3,
    participants: int = 1,
    focus_areas: list[str] | None = None,
    rrule: str | None = None,
    complete: bool = True,
    attendance: int | None = None,
    title: str = "Calm classroom",
) -> Delivered:
    """A program that started `days_ago` days ago (daily unless `rrule`), staffed by a therapist
    of its own, every session completed by that therapist (attendance: every participant)."""
    org = org or await api.make_org()
    offering = await api.make_offering()
    therapist = await api.make_therapist()
    start = (datetime.now(UTC) - timedelta(days=days_ago)).date()
    program = await confirmed_program(
        api,
        org,
        offering,
        therapist,
        title=title,
        participants=participants,
        focus_areas=FOCUS_AREAS if focus_areas is None else focus_areas,
        schedule={
            "start_date": str(start),
            "start_time": "10:00",
            "rrule": rrule or f"FREQ=DAILY;COUNT={sessions}",
            "timezone": org["timezone"],
        },
    )
    key = await api.therapist_key(therapist["id"])
    listed = await sessions_of(api, program["id"])
    if complete:
        for session in listed:
            ok(
                await api.client.post(
                    f"/v1/sessions/{session['id']}/complete",
                    json={"attendance": participants if attendance is None else attendance},
                    headers=key,
                )
            )
        listed = await sessions_of(api, program["id"])
    return Delivered(org, program, therapist, key, listed)


async def observe(
    api: Api,
    session: dict[str, Any],
    headers: Headers,
    ratings: dict[str, int],
    note: str | None = None,
    status: int = 201,
) -> dict[str, Any]:
    body: dict[str, Any] = {"ratings": ratings}
    if note is not None:
        body["note"] = note
    response = await api.client.put(
        f"/v1/sessions/{session['id']}/observation", json=body, headers=headers
    )
    return dict(ok(response, status))
