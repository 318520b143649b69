"""The `ensemble` command as an operator runs it, against a scratch database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg

from service.core.auth import hash_secret


def ensemble(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_new_install_bootstraps_its_first_admin_key_from_the_cli(scratch_database):
    url = scratch_database("ensemble_cli_keys")
    assert ensemble("migrate", database_url=url).returncode == 0
    result = ensemble("create-key", "--role", "admin", "--name", "First admin", database_url=url)
    assert result.returncode == 0, result.stderr
    secret = result.stdout.strip()
    assert secret.startswith("ens_")
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT role, name FROM api_keys WHERE secret_hash = %s", (hash_secret(secret),)
        ).fetchone()
    assert row == ("admin", "First admin")


def test_create_key_refuses_a_coordinator_without_an_organization(scratch_database):
    url = scratch_database("ensemble_cli_bad_key")
    assert ensemble("migrate", database_url=url).returncode == 0
    result = ensemble("create-key", "--role", "coordinator", "--name", "x", database_url=url)
    assert result.returncode != 0
    assert "organization_id" in result.stderr


def test_demo_loads_the_sample_practice_once(scratch_database):
    url = scratch_database("ensemble_cli_demo")
    first = ensemble("demo", database_url=url)
    assert first.returncode == 0, first.stderr
    second = ensemble("demo", database_url=url)
    assert "left alone" in second.stdout
    with psycopg.connect(url) as conn:
        orgs = conn.execute(
            "SELECT kind, holiday_region FROM organizations ORDER BY kind"
        ).fetchall()
        creds = conn.execute("SELECT credentials FROM therapists").fetchall()
        formats = conn.execute("SELECT format FROM offerings ORDER BY format").fetchall()
    assert orgs == [("clinic", "CA-AB"), ("school", "CA-AB"), ("workplace", "US-NY")]
    assert len(creds) == 3
    assert {"MTA", "MT-BC"} <= {c for (row,) in creds for c in row}
    assert formats == [("group",), ("individual",)]


def test_openapi_prints_the_committed_spec():
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "openapi"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # `make openapi` writes exactly this: the committed document is what the command prints.
    committed = (Path(__file__).resolve().parent.parent / "openapi" / "openapi.json").read_text()
    assert result.stdout == committed, "run `make openapi` and commit the result"
