"""The committed OpenAPI document against the live server: schemathesis (its `st run`) drives
every operation, as each role, with requests generated from openapi/openapi.json, and checks
that the server answers as the document says: no 5xx, only documented statuses and content
types, bodies matching their schemas, what the document forbids refused and what it allows
accepted. A fixed seed and a bounded number of examples keep the run repeatable and short;
the four roles run side by side against one `ensemble serve` on loopback (its own process, as
in production), on rows seeded so that ids in paths often name real resources.

Not counted as failures (tests/schemathesis_hooks.py, filter_failure): a schema-valid request
refused with a 422 only for a service rule no schema can state (a referenced row must exist, a
date must not be past, one field against another, the caller's role).

Left out, each for a reason no document can fix:
- POST /v1/integrations/stripe/webhook: its body is only valid with a `Stripe-Signature`
  computed with the server's secret over the exact bytes, which no schema can describe (and
  without STRIPE_WEBHOOK_SECRET it answers 503 by design). tests/test_stripe_webhooks.py
  covers it.
- GET /metrics: Prometheus text, not part of the API (its own tests cover it).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest

from service.core.settings import Settings
from tests.billing_support import complete, delivered_program, period, run
from tests.conftest import LiveServer, _truncate_all
from tests.programs_support import confirmed_program, sessions_of
from tests.support import Api, ok

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "openapi" / "openapi.json"
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "positive_data_acceptance",
    )
)
SEED = 20261207
MAX_EXAMPLES = 10
EXCLUDED = ("receive_stripe_webhook", "prometheus_metrics")  # operation ids


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def served(settings: Settings, database_url: str) -> Iterator[LiveServer]:
    """`ensemble serve` on the test database, as the test settings configure the app."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "ENSEMBLE_ENVIRONMENT": "development",
        "ENSEMBLE_RATE_LIMITS": "false",
        "ENSEMBLE_WEBHOOK_ALLOW_PRIVATE": "true",
        "STRIPE_API_KEY": "",
        "STRIPE_WEBHOOK_SECRET": "",
    }
    command = [str(Path(sys.executable).with_name("ensemble")), "serve", "--no-scheduler"]
    server = subprocess.Popen(
        [*command, "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ensemble serve did not start")
            time.sleep(0.1)
        yield LiveServer(url=url, settings=settings)
    finally:
        server.terminate()
        server.wait(timeout=30)
        _truncate_all(database_url)


async def seed(live: LiveServer) -> tuple[dict[str, str], dict[str, str]]:
    """Real rows for path parameters to name, and a key per role: (ids by parameter name,
    bearer token by role)."""
    admin = await live.admin_key()
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        api = Api(client=client, admin=admin)
        org = await api.make_org()
        therapist = await api.make_therapist()
        offering = await api.make_offering()
        start = date.today() + timedelta(days=14)
        program = await confirmed_program(
            api, org, offering, therapist, schedule={"start_date": start.isoformat()}
        )
        session = (await sessions_of(api, program["id"]))[0]
        feed = ok(
            await client.post(
                "/v1/calendar-feeds", json={"organization_id": org["id"]}, headers=admin
            ),
            201,
        )
        _, done = await delivered_program(api, org, sessions=2, days_ago=10)
        for past in done:
            await complete(api, past)
        invoice = (await run(api, *period(30), organization_id=org["id"]))[0]
        endpoint = ok(
            await client.post(
                "/v1/webhook-endpoints",
                json={"url": "http://127.0.0.1:9/hooks", "events": ["*"]},
                headers=admin,
            ),
            201,
        )
        keys = {
            "admin": admin,
            "coordinator": await api.coordinator(org["id"]),
            "therapist": await api.therapist_key(therapist["id"]),
            "finance": await api.key("finance"),
        }
    ids = {
        "organization_id": org["id"],
        "therapist_id": therapist["id"],
        "offering_id": offering["id"],
        "program_id": program["id"],
        "session_id": session["id"],
        "feed_id": feed["id"],
        "invoice_id": invoice["id"],
        "endpoint_id": endpoint["id"],
    }
    return ids, {role: headers["Authorization"] for role, headers in keys.items()}


async def run_schemathesis(
    live: LiveServer, role: str, authorization: str, ids: dict[str, str], where: Path
) -> tuple[int, str]:
    """One role's run, from `where`: schemathesis keeps a cache of past failures in its working
    directory and replays them first, so each run starts from a fresh one (and the
    repository never holds one)."""
    excluded = [arg for operation in EXCLUDED for arg in ("--exclude-operation-id", operation)]
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("st")),
        "run",
        str(SPEC),
        "--url",
        live.url,
        "--header",
        f"Authorization: {authorization}",
        "--checks",
        CHECKS,
        "--seed",
        str(SEED),
        "--max-examples",
        str(MAX_EXAMPLES),
        # Fuzzing only: the coverage phase builds its boundary values from the schema alone,
        # past the hooks (tests/schemathesis_hooks.py) that make a cursor, a registry value or
        # an Idempotency-Key real, so it would only report what those hooks exist to prevent.
        "--phases",
        "fuzzing",
        # One worker per role: Hypothesis's lambda descriptions are not thread-safe.
        "--workers",
        "1",
        "--no-shrink",
        *excluded,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=where,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
            "SEEDED_IDS": json.dumps(ids),
            "NO_COLOR": "1",
        },
    )
    output, _ = await process.communicate()
    return process.returncode or 0, f"== {role}\n{output.decode(errors='replace')}"


async def test_every_role_gets_what_the_committed_spec_promises(served: LiveServer, tmp_path: Path):
    ids, keys = await seed(served)
    for role in keys:
        (tmp_path / role).mkdir()
    results = await asyncio.gather(
        *(run_schemathesis(served, role, key, ids, tmp_path / role) for role, key in keys.items())
    )
    print("\n".join(o.strip().splitlines()[-1] for _, o in results))
    failed = [output for code, output in results if code != 0]
    assert not failed, "\n".join(failed)
