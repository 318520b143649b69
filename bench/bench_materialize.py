"""Confirming a program writes its sessions in one batched statement: the cost of confirming
a 500-session program should be a small multiple of a 1-session one, not 500 times it.

Run by hand: `.venv/bin/python bench/bench_materialize.py [--repeat N]`. Prints the median
time to book, staff and confirm programs of 1, 50 and 500 sessions, and each one's ratio to the
1-session case measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from service import bootstrap
from service.app import create_app
from service.core import migrate
from service.core.embedded import EmbeddedPostgres
from service.core.settings import Settings


async def run(url: str, repeat: int) -> None:
    settings = Settings(database_url=url)
    migrate.upgrade(url)
    auth = {
        "Authorization": f"Bearer {await bootstrap.create_key(settings, role='admin', name='b')}"
    }
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as http,
    ):
        org = (
            await http.post(
                "/v1/organizations",
                headers=auth,
                json={"name": "Bench", "kind": "school", "timezone": "America/Edmonton"},
            )
        ).json()
        offering = (
            await http.post(
                "/v1/offerings",
                headers=auth,
                json={
                    "name": "Bench",
                    "format": "group",
                    "duration_minutes": 30,
                    "rate_cents": 1,
                    "max_participants": 5,
                },
            )
        ).json()
        baseline = None
        for count in (1, 50, 500):
            samples = []
            for i in range(repeat):
                therapist = (
                    await http.post(
                        "/v1/therapists",
                        headers=auth,
                        json={
                            "name": "T",
                            "email": f"t{count}-{i}@bench.example",
                            "timezone": "America/Edmonton",
                        },
                    )
                ).json()
                started = time.perf_counter()
                program = (
                    await http.post(
                        "/v1/programs",
                        headers=auth,
                        json={
                            "organization_id": org["id"],
                            "offering_id": offering["id"],
                            "title": "B",
                            "modality": "online",
                            "video_url": "https://meet.example.org/b",
                            "participants": 1,
                            "schedule": {
                                "timezone": "America/Edmonton",
                                "start_date": "2027-01-04",
                                "start_time": "09:00",
                                "rrule": f"FREQ=DAILY;COUNT={count}",
                            },
                        },
                    )
                ).json()
                await http.post(
                    f"/v1/programs/{program['id']}/assign",
                    headers=auth,
                    json={"therapist_id": therapist["id"]},
                )
                confirmed = await http.post(f"/v1/programs/{program['id']}/confirm", headers=auth)
                assert confirmed.status_code == 200, confirmed.text
                samples.append(time.perf_counter() - started)
            median = statistics.median(samples)
            baseline = baseline or median
            print(
                f"book+assign+confirm {count:4d} sessions  {median * 1000:8.1f} ms  "
                f"x{median / baseline:5.1f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    server = EmbeddedPostgres(
        Path(tempfile.mkdtemp(prefix="ensemble-bench-")) / "pgdata", delete_on_stop=True
    )
    server.start()
    try:
        asyncio.run(run(server.ensure_database("bench"), args.repeat))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
