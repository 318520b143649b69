"""A portal page's render time against the API calls behind it (issue 18: within 2x).

Run by hand against a running server: `.venv/bin/python -m bench.portal_pages URL ADMIN_KEY
[--programs N] [--repeat R]`. It books N confirmed daily programs for one new organization
(through the API), signs a coordinator of that organization in to the portal, and prints the
median time of each page and of the API calls a client would make for the same view, and
their ratio. The pages measured are the heaviest: Programs (every program, its next session
and therapist) and a program's month calendar.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from datetime import date, timedelta

import httpx


def median_ms(client: httpx.Client, path: str, repeat: int, **kwargs: object) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        answer = client.get(path, **kwargs)  # type: ignore[arg-type]
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("admin_key")
    parser.add_argument("--programs", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    admin = httpx.Client(
        base_url=args.url, headers={"Authorization": f"Bearer {args.admin_key}"}, timeout=60
    )
    stamp = str(int(time.time()))
    org = admin.post(
        "/v1/organizations",
        json={
            "name": f"Bench school {stamp}",
            "kind": "school",
            "timezone": "America/Edmonton",
            "currency": "CAD",
            "holiday_region": "CA-AB",
        },
    ).json()["id"]
    therapist = admin.post(
        "/v1/therapists",
        json={
            "name": "Bench Therapist",
            "email": f"bench{stamp}@bench.example",
            "timezone": "America/Edmonton",
            "max_weekly_minutes": 10080,
        },
    ).json()["id"]
    admin.put(
        f"/v1/therapists/{therapist}/availability",
        json=[
            {"weekday": d, "start": "00:00", "end": "24:00"}
            for d in ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
        ],
    )
    offering = admin.post(
        "/v1/offerings",
        json={
            "name": "Bench (15 min)",
            "format": "group",
            "duration_minutes": 15,
            "rate_cents": 10000,
            "max_participants": 10,
        },
    ).json()["id"]
    start = date.today() + timedelta(days=1)
    program_ids = []
    for n in range(args.programs):
        minute = 15 * n
        made = admin.post(
            "/v1/programs",
            json={
                "organization_id": org,
                "offering_id": offering,
                "title": f"Program {n}",
                "modality": "online",
                "video_url": "https://video.example/x",
                "participants": 3,
                "schedule": {
                    "timezone": "America/Edmonton",
                    "start_date": start.isoformat(),
                    "start_time": f"{6 + minute // 60:02d}:{minute % 60:02d}",
                    "rrule": "FREQ=DAILY;COUNT=30",
                },
            },
        ).json()["id"]
        admin.post(f"/v1/programs/{made}/assign", json={"therapist_id": therapist})
        admin.post(f"/v1/programs/{made}/confirm")
        program_ids.append(made)
    key = admin.post(
        "/v1/api-keys",
        json={"name": "Bench coordinator", "role": "coordinator", "organization_id": org},
    ).json()["key"]
    api = httpx.Client(base_url=args.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    portal = httpx.Client(base_url=args.url, timeout=60)
    login = portal.get("/app/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', login.text)
    assert csrf is not None
    portal.post("/app/login", data={"csrf": csrf[1], "api_key": key})

    month = start.strftime("%Y-%m")
    first = start.replace(day=1)
    last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
    rows: list[tuple[str, str, list[tuple[str, dict[str, object]]]]] = [
        (
            "Programs",
            "/app/programs",
            [
                ("/v1/programs", {"limit": 200}),
                ("/v1/sessions", {"status": "scheduled", "from": start.isoformat(), "limit": 200}),
            ],
        ),
        (
            "Program calendar",
            f"/app/programs/{program_ids[0]}?month={month}",
            [
                (f"/v1/programs/{program_ids[0]}", {}),
                (
                    "/v1/sessions",
                    {
                        "program_id": program_ids[0],
                        "from": first.isoformat(),
                        "to": last.isoformat(),
                        "limit": 200,
                    },
                ),
                (f"/v1/programs/{program_ids[0]}/summary", {}),
            ],
        ),
    ]
    for name, page, calls in rows:
        median_ms(portal, page, 3)  # warm up
        page_ms = median_ms(portal, page, args.repeat)
        first_call_ms = median_ms(api, calls[0][0], args.repeat, params=calls[0][1])
        all_calls_ms = sum(median_ms(api, p, args.repeat, params=q) for p, q in calls)
        print(
            f"{name}: page {page_ms:.1f} ms; {calls[0][0]} {first_call_ms:.1f} ms "
            f"(ratio {page_ms / first_call_ms:.2f}); all {len(calls)} API calls "
            f"{all_calls_ms:.1f} ms (ratio {page_ms / all_calls_ms:.2f})"
        )


if __name__ == "__main__":
    main()
