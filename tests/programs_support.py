"""Factories for programs and sessions, on top of tests.support.Api."""

from __future__ import annotations

from typing import Any

from tests.support import Api, ok


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
        "start_date": "2027-01-05",
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
