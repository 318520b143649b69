"""ENSEMBLE_ENVIRONMENT=production refuses to start with settings that are only safe on a
laptop: one line per reason, exit code 2, and nothing migrated or served."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from service import bootstrap
from service.core.production import production_refusals
from service.core.settings import Settings

SECRET_KEY = "kZ3v9cQe8yT1mW4pL7xN2bR5sD0fG6hJ-aUiOoPqE1w"
METRICS_TOKEN = "m3tr1cs-t0ken-for-prometheus"
PUBLIC_URL = "https://ensemble.example.org"

ALLOW_PRIVATE = (
    "ENSEMBLE_WEBHOOK_ALLOW_PRIVATE is true: webhooks could reach loopback and private "
    "addresses; unset it"
)
NO_SECRET_KEY = (
    "ENSEMBLE_SECRET_KEY is not set: secrets at rest would be encrypted with the published "
    "development key"
)
DEVELOPMENT_KEY = "ENSEMBLE_SECRET_KEY holds the published development key; make a new one"
NO_DATABASE = "DATABASE_URL is not set: production does not run the embedded database"
DEFAULT_PASSWORD = (
    "the database password is 'ensemble', the compose file's old default; set "
    "POSTGRES_PASSWORD (and DATABASE_URL) to a secret one"
)
DEMO_DATA = (
    "the database holds the demo data (`ensemble demo` / `serve --demo`); use a database without it"
)
NO_PUBLIC_URL = (
    "ENSEMBLE_PUBLIC_URL is not set: links handed out (calendar feeds) need the address "
    "clients reach"
)
OPEN_METRICS = (
    "/metrics would be public: set ENSEMBLE_METRICS_TOKEN or serve metrics on their own port "
    "(`ensemble serve --metrics-port`)"
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.startswith(("ENSEMBLE_", "STRIPE_")) or name in ("DATABASE_URL", "PGPASSWORD"):
            monkeypatch.delenv(name)


def production(**overrides: Any) -> Settings:
    """Settings that production accepts, with `overrides` (None removes a setting)."""
    values: dict[str, Any] = {
        "environment": "production",
        "database_url": "postgresql://ensemble:a-long-secret@db.internal:5432/ensemble",
        "secret_key": SECRET_KEY,
        "public_url": PUBLIC_URL,
        "metrics_token": METRICS_TOKEN,
        **overrides,
    }
    return Settings(**{name: value for name, value in values.items() if value is not None})


def refusals(settings: Settings, *, demo: bool = False, own_port: bool = False) -> list[str]:
    return production_refusals(settings, holds_demo_data=demo, metrics_on_own_port=own_port)


def test_production_with_safe_settings_has_nothing_to_refuse():
    assert refusals(production()) == []


def test_development_refuses_nothing_even_with_every_laptop_setting():
    laptop = Settings(environment="development", webhook_allow_private=True)
    assert refusals(laptop, demo=True) == []


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"webhook_allow_private": True}, ALLOW_PRIVATE),
        ({"secret_key": None}, NO_SECRET_KEY),
        (
            {
                "secret_key": f"{SECRET_KEY},ensemble-development-only-key-not-a-secret-never-"
                "use-in-production"
            },
            DEVELOPMENT_KEY,
        ),
        ({"database_url": "postgresql://ensemble:ensemble@db.internal/ensemble"}, DEFAULT_PASSWORD),
        ({"public_url": None}, NO_PUBLIC_URL),
        (
            {"public_url": "http://127.0.0.1:8000"},
            "ENSEMBLE_PUBLIC_URL is http://127.0.0.1:8000, a local address clients cannot reach",
        ),
        (
            {"public_url": "https://localhost"},
            "ENSEMBLE_PUBLIC_URL is https://localhost, a local address clients cannot reach",
        ),
        ({"metrics_token": None}, OPEN_METRICS),
    ],
    ids=[
        "private-webhooks",
        "no-secret-key",
        "development-key",
        "default-password",
        "no-public-url",
        "loopback-public-url",
        "localhost-public-url",
        "open-metrics",
    ],
)
def test_each_unsafe_setting_is_refused_with_its_reason(overrides: dict[str, Any], reason: str):
    assert refusals(production(**overrides)) == [reason]


def test_the_default_password_given_to_libpq_in_pgpassword_is_refused_too(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("PGPASSWORD", "ensemble")
    settings = production(database_url="postgresql://ensemble@db.internal/ensemble")
    assert refusals(settings) == [DEFAULT_PASSWORD]


def test_no_database_url_is_refused():
    # Settings refuses this itself; the rule also holds for settings built some other way.
    settings = production().model_copy(update={"database_url": None})
    assert refusals(settings) == [NO_DATABASE]


def test_the_demo_data_is_refused():
    assert refusals(production(), demo=True) == [DEMO_DATA]


def test_metrics_on_their_own_port_need_no_token():
    assert refusals(production(metrics_token=None), own_port=True) == []


def test_every_problem_is_listed_at_once():
    settings = production(
        webhook_allow_private=True,
        secret_key=None,
        database_url="postgresql://ensemble:ensemble@db.internal/ensemble",
        public_url=None,
        metrics_token=None,
    )
    assert refusals(settings, demo=True) == [
        ALLOW_PRIVATE,
        NO_SECRET_KEY,
        DEFAULT_PASSWORD,
        DEMO_DATA,
        NO_PUBLIC_URL,
        OPEN_METRICS,
    ]


def test_the_demo_data_is_recognised_in_the_database(scratch_database: Callable[[str], str]):
    url = scratch_database("ensemble_guard_demo")
    settings = production(database_url=url)
    assert asyncio.run(bootstrap.holds_demo_data(settings)) is False  # no schema yet
    assert ensemble("migrate", env=development(url)).returncode == 0
    assert asyncio.run(bootstrap.holds_demo_data(settings)) is False  # empty
    assert ensemble("demo", env=development(url)).returncode == 0
    assert asyncio.run(bootstrap.holds_demo_data(settings)) is True


# --- the command, as an operator runs it --------------------------------------------------------


def development(url: str) -> dict[str, str]:
    return {"DATABASE_URL": url}


def production_env(url: str, **overrides: str) -> dict[str, str]:
    return {
        "ENSEMBLE_ENVIRONMENT": "production",
        "DATABASE_URL": url,
        "ENSEMBLE_SECRET_KEY": SECRET_KEY,
        "ENSEMBLE_PUBLIC_URL": PUBLIC_URL,
        "ENSEMBLE_METRICS_TOKEN": METRICS_TOKEN,
        "ENSEMBLE_RATE_LIMITS": "false",
        **overrides,
    }


def outside_settings() -> dict[str, str]:
    """This process's environment without anything the app's settings would read."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ENSEMBLE_", "STRIPE_"))
        and key not in ("DATABASE_URL", "PGPASSWORD")
    }


def ensemble(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env={**outside_settings(), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def tables(url: str) -> int:
    with psycopg.connect(url) as conn:
        found = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert found is not None
    return int(found[0])


def test_serve_refuses_to_start_in_production_with_a_line_per_problem(
    scratch_database: Callable[[str], str],
):
    url = scratch_database("ensemble_guard_serve")
    assert ensemble("demo", env=development(url)).returncode == 0

    result = ensemble(
        "serve",
        "--port",
        "9",
        env=production_env(url, ENSEMBLE_WEBHOOK_ALLOW_PRIVATE="true", ENSEMBLE_METRICS_TOKEN=""),
    )

    assert result.returncode == 2
    prefix = "ensemble serve: refusing to start in production: "
    assert result.stderr.splitlines() == [
        prefix + ALLOW_PRIVATE,
        prefix + DEMO_DATA,
        prefix + OPEN_METRICS,
    ]


def test_the_worker_refuses_to_start_without_a_secret_key_before_migrating(
    scratch_database: Callable[[str], str],
):
    url = scratch_database("ensemble_guard_worker")

    result = ensemble("worker", env=production_env(url, ENSEMBLE_SECRET_KEY=""))

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "ensemble worker: refusing to start in production: " + NO_SECRET_KEY
    ]
    assert tables(url) == 0


def test_production_without_a_database_url_is_one_line_too():
    result = ensemble("serve", env={"ENSEMBLE_ENVIRONMENT": "production"})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "ensemble serve: settings: Value error, DATABASE_URL is required when "
        "ENSEMBLE_ENVIRONMENT=production"
    ]


def test_a_database_that_cannot_be_reached_is_one_line_not_a_traceback():
    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        result = ensemble(
            "migrate", env={"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/nowhere"}
        )

    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ensemble migrate: the database is unavailable: ")
    assert f"port {port} failed: Connection refused" in lines[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_starts_in_production_when_all_is_well(scratch_database: Callable[[str], str]):
    url = scratch_database("ensemble_guard_ok")
    port = free_port()
    assert make_url(url).password != "ensemble"
    server = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--no-scheduler"],
        env={**outside_settings(), **production_env(url)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.communicate()[0]
            try:
                ready = httpx.get(f"{base}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "ensemble serve did not become ready"
            time.sleep(0.2)
        assert httpx.get(f"{base}/metrics").status_code == 401
        token = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        assert httpx.get(f"{base}/metrics", headers=token).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
