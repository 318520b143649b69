"""Delivered sessions to bill, made through the API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.programs_support import confirmed_program, sessions_of
from tests.support import Api, ok


async def delivered_program(
    api: Api,
    org: dict[str, Any],
    *,
    rate_cents: int = 10000,
    fee_percent: int = 50,
    sessions: int = 4,
    days_ago: int = 20,
    title: str = "Rhythm group",
    currency: str = "CAD",
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A program recorded by an admin that started `days_ago` days ago, daily, all past."""
    offering = await api.make_offering(
        rate_cents=rate_cents, late_cancel_fee_percent=fee_percent, currency=currency
    )
    therapist = await api.make_therapist()
    start = (datetime.now(UTC) - timedelta(days=days_ago)).date()
    program = await confirmed_program(
        api,
        org,
        offering,
        therapist,
        title=title,
        schedule={
            "start_date": str(start),
            "start_time": "10:00",
            "rrule": f"FREQ=DAILY;COUNT={sessions}",
            "timezone": org["timezone"],
        },
    )
    return program, await sessions_of(api, program["id"])


async def complete(api: Api, session: dict[str, Any], attendance: int = 1) -> None:
    ok(
        await api.client.post(
            f"/v1/sessions/{session['id']}/complete",
            headers=api.admin,
            json={"attendance": attendance},
        )
    )


async def run(api: Api, start: str, end: str, **extra: Any) -> list[dict[str, Any]]:
    body = {"period_start": start, "period_end": end, **extra}
    return ok(await api.client.post("/v1/invoice-runs", json=body, headers=api.admin), 201)["data"]


def period(days_back: int = 60) -> tuple[str, str]:
    today = datetime.now(UTC).date()
    return str(today - timedelta(days=days_back)), str(today)
