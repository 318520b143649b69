"""The organization's outcomes rollup at size: 50 programs x 100 delivered sessions, every
session observed on two focus areas (5,000 sessions, 10,000 ratings), and the program report.

Run by hand: `.venv/bin/python -m bench.outcomes [--programs 50] [--sessions 100]
[--database-url URL]`. Without a URL it starts a throwaway embedded PostgreSQL. Programs are
booked and confirmed through the API (one therapist each, daily sessions ending yesterday);
the sessions are then marked delivered and observed in three set-based statements (the bench
is about reading them). It prints the median time of GET /v1/organizations/{id}/outcomes for
the whole period, of GET /v1/programs/{id}/outcomes and of the PDF, in-process through httpx.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import psycopg

from bench.scratch import scratch_database
from service import bootstrap
from service.app import create_app
from service.core import migrate
from service.core.settings import Settings

ALL_WEEK = [
    {"weekday": d, "start": "00:00", "end": "23:59"}
    for d in ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
]


async def seed(
    http: httpx.AsyncClient, auth: dict[str, str], programs: int, sessions: int
) -> tuple[dict[str, Any], list[str], date]:
    async def post(path: str, body: object, status: int = 201) -> dict[str, Any]:
        response = await http.post(path, json=body, headers=auth)
        assert response.status_code == status, response.text
        return dict(response.json())

    org = await post(
        "/v1/organizations", {"name": "Bench school", "kind": "school", "timezone": "UTC"}
    )
    offering = await post(
        "/v1/offerings",
        {
            "name": "Group",
            "format": "group",
            "duration_minutes": 45,
            "rate_cents": 10000,
            "max_participants": 30,
        },
    )
    start = (datetime.now(UTC) - timedelta(days=sessions)).date()
    ids = []
    for n in range(programs):
        therapist = await post(
            "/v1/therapists",
            {"name": f"T{n}", "email": f"t{n}@bench.example", "timezone": "UTC"},
        )
        response = await http.put(
            f"/v1/therapists/{therapist['id']}/availability", json=ALL_WEEK, headers=auth
        )
        assert response.status_code == 200, response.text
        program = await post(
            "/v1/programs",
            {
                "organization_id": org["id"],
                "offering_id": offering["id"],
                "title": f"Program {n}",
                "focus_areas": ["stress_anxiety", "wellbeing"],
                "modality": "online",
                "video_url": "https://meet.example.org/bench",
                "participants": 12,
                "schedule": {
                    "timezone": "UTC",
                    "start_date": str(start),
                    "start_time": "10:00",
                    "rrule": f"FREQ=DAILY;COUNT={sessions}",
                },
            },
        )
        await post(f"/v1/programs/{program['id']}/assign", {"therapist_id": therapist["id"]}, 200)
        await post(f"/v1/programs/{program['id']}/confirm", {}, 200)
        ids.append(str(program["id"]))
    return org, ids, start


def deliver_and_observe(url: str, org_id: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE sessions SET status = 'completed', attendance = 8 + (occurrence %% 5) "
            "WHERE organization_id = %s",
            (org_id,),
        )
        conn.execute(
            "INSERT INTO observations (id, session_id, program_id, organization_id, therapist_id)"
            " SELECT gen_random_uuid(), id, program_id, organization_id, therapist_id"
            " FROM sessions WHERE organization_id = %s",
            (org_id,),
        )
        conn.execute(
            "INSERT INTO observation_ratings (session_id, focus_area, rating)"
            " SELECT s.id, area, 1 + (s.occurrence + length(area)) %% 5"
            " FROM sessions s, unnest(ARRAY['stress_anxiety', 'wellbeing']) AS area"
            " WHERE s.organization_id = %s",
            (org_id,),
        )
        conn.execute("ANALYZE")
        row = conn.execute("SELECT count(*) FROM observation_ratings").fetchone()
        assert row is not None
        return int(row[0])


async def timed(n: int, call: Callable[[], Awaitable[httpx.Response]]) -> float:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        response = await call()
        samples.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return statistics.median(samples)


async def run(url: str, programs: int, sessions: int, repeat: int) -> None:
    settings = Settings(database_url=url, scheduler=False, rate_limits=False)
    migrate.upgrade(url)
    key = await bootstrap.create_key(settings, role="admin", name="bench")
    auth = {"Authorization": f"Bearer {key}"}
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://b", timeout=60
        ) as http,
    ):
        seeded = time.perf_counter()
        org, ids, start = await seed(http, auth, programs, sessions)
        ratings = deliver_and_observe(url, org["id"])
        print(
            f"seeded {programs} programs x {sessions} sessions, {ratings} ratings "
            f"in {time.perf_counter() - seeded:.0f} s"
        )
        period = {"from": str(start), "to": str(datetime.now(UTC).date())}
        rollup = await http.get(
            f"/v1/organizations/{org['id']}/outcomes", params=period, headers=auth
        )
        body = rollup.json()
        assert body["sessions"]["delivered"] == programs * sessions, body["sessions"]
        calls = {
            "GET /v1/organizations/{id}/outcomes": lambda: http.get(
                f"/v1/organizations/{org['id']}/outcomes", params=period, headers=auth
            ),
            "GET /v1/programs/{id}/outcomes": lambda: http.get(
                f"/v1/programs/{ids[0]}/outcomes", headers=auth
            ),
            "GET /v1/programs/{id}/outcomes.pdf": lambda: http.get(
                f"/v1/programs/{ids[0]}/outcomes.pdf", headers=auth
            ),
        }
        for name, call in calls.items():
            await call()  # warm
            median = await timed(repeat, call)
            print(f"{name:40s} median {median * 1000:8.1f} ms over {repeat} requests")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--programs", type=int, default=50)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    with scratch_database(args.database_url) as url:
        asyncio.run(run(url, args.programs, args.sessions, args.repeat))


if __name__ == "__main__":
    main()
