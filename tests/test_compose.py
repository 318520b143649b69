"""docker-compose.yml and the Dockerfile describe a deployment the app can actually run in.

Docker is not needed: the files are read and checked against the code (no database either).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices

from service.core.db import sqlalchemy_url
from service.core.production import COMPOSE_DEFAULT_PASSWORD, production_refusals
from service.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
APP_SERVICES = ("api", "worker")
# ${VAR}, ${VAR-default}, ${VAR:-default}, ${VAR?error}, ${VAR:?error}; $$ is a literal dollar.
INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
# What a deployer must give (compose stops with the `:?` message otherwise): stand-ins.
REQUIRED = {
    "POSTGRES_PASSWORD": "a-long-secret-database-password",
    "ENSEMBLE_SECRET_KEY": "kZ3v9cQe8yT1mW4pL7xN2bR5sD0fG6hJ-aUiOoPqE1w",
    "ENSEMBLE_PUBLIC_URL": "https://ensemble.example.org",
}


class MissingVariable(Exception):
    pass


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict), "docker-compose.yml is not a mapping"
    return loaded


def service(name: str) -> dict[str, Any]:
    services = compose().get("services") or {}
    assert name in services, f"docker-compose.yml has no {name!r} service"
    spec = services[name]
    assert isinstance(spec, dict)
    return spec


def environment(name: str) -> dict[str, str | None]:
    """A service's environment as a mapping, whether written as a mapping or a KEY=VALUE list."""
    env = service(name).get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) for item in env)
        return {pair[0]: pair[1] if len(pair) == 2 else None for pair in pairs}
    return {key: None if value is None else str(value) for key, value in env.items()}


def interpolate(value: str | None, shell: dict[str, str]) -> str:
    """What compose would substitute with `shell` as the shell's (or .env file's) variables;
    MissingVariable (with compose's message) for a required one that is missing."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match.group("name"), match.group("op") or "", match.group("arg") or ""
        given = shell.get(name)
        missing = given is None or (op.startswith(":") and given == "")
        if not missing:
            return given or ""
        if op.endswith("?"):
            raise MissingVariable(f"{name}: {arg}")
        return arg if op.endswith("-") else ""

    text = INTERPOLATION.sub(substitute, value or "")
    assert "${" not in text, f"unsupported interpolation in {value!r}"
    return text.replace("$$", "$")


def with_defaults(value: str | None) -> str:
    """What compose would substitute with only the required variables set."""
    return interpolate(value, REQUIRED)


def command(name: str) -> list[str]:
    cmd = service(name).get("command")
    assert cmd, f"{name} has no command"
    return cmd.split() if isinstance(cmd, str) else [str(part) for part in cmd]


def env_names(field_name: str) -> list[str]:
    """The environment names pydantic-settings reads for a field, the canonical one first."""
    field = Settings.model_fields[field_name]
    alias = field.validation_alias or field.alias
    if isinstance(alias, AliasChoices):
        return [choice for choice in alias.choices if isinstance(choice, str)]
    if isinstance(alias, str):
        return [alias]
    return [f"{Settings.model_config.get('env_prefix', '')}{field_name}".upper()]


def settings_env_names() -> set[str]:
    return {env_names(name)[0] for name in Settings.model_fields}


def test_the_settings_env_names_are_derived_from_the_settings_class() -> None:
    # Guards the derivation itself: an empty or wrong list would make the wiring test vacuous.
    names = settings_env_names()
    assert len(names) == len(Settings.model_fields)
    assert {"DATABASE_URL", "ENSEMBLE_ENVIRONMENT", "ENSEMBLE_TIMEZONE", "STRIPE_API_KEY"} <= names


def test_a_deployer_gets_a_postgres_an_api_and_a_worker() -> None:
    assert {"postgres", "api", "worker"} <= set(compose().get("services") or {})


def test_postgres_is_the_official_image_keeping_its_data_on_a_named_volume() -> None:
    postgres = service("postgres")
    image = str(postgres.get("image", ""))
    assert re.fullmatch(r"(docker\.io/)?(library/)?postgres:\d+[\w.-]*", image), image
    mounts = [str(volume).split(":", 1) for volume in postgres.get("volumes") or []]
    named = [source for source, *_ in mounts if not source.startswith((".", "/", "~"))]
    assert named, "postgres data must live on a named volume"
    assert set(named) <= set(compose().get("volumes") or {}), "volume not declared at top level"
    env = environment("postgres")
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= set(env)


def test_postgres_reports_healthy_only_when_it_accepts_connections() -> None:
    test = service("postgres").get("healthcheck", {}).get("test")
    assert test, "postgres needs a healthcheck"
    assert "pg_isready" in " ".join(test if isinstance(test, list) else [test])


def test_the_api_and_the_worker_run_the_image_built_from_the_one_dockerfile() -> None:
    builds = []
    for name in APP_SERVICES:
        build = service(name).get("build")
        assert build, f"{name} must be built from the Dockerfile"
        if isinstance(build, str):
            build = {"context": build}
        builds.append((build.get("context", "."), build.get("dockerfile", "Dockerfile")))
    assert len(set(builds)) == 1, builds
    context, dockerfile = builds[0]
    assert (COMPOSE_FILE.parent / context / dockerfile).resolve() == DOCKERFILE
    assert DOCKERFILE.is_file()


def test_the_api_serves_without_the_scheduler_and_the_worker_runs_the_jobs() -> None:
    api = command("api")
    assert api[:2] == ["ensemble", "serve"], api
    assert "--no-scheduler" in api
    assert api[api.index("--host") + 1] == "0.0.0.0"
    assert "worker" in command("worker")


def test_the_api_starts_only_once_postgres_is_healthy() -> None:
    depends_on = service("api").get("depends_on")
    assert isinstance(depends_on, dict), "api.depends_on needs the long form with a condition"
    assert depends_on.get("postgres", {}).get("condition") == "service_healthy"


def test_the_api_is_healthy_only_when_readyz_says_so() -> None:
    api = service("api")
    test = api.get("healthcheck", {}).get("test")
    assert test, "api needs a healthcheck"
    assert "/readyz" in " ".join(test if isinstance(test, list) else [test])
    assert any(str(port).split(":")[-1] == "8000" for port in api.get("ports") or [])


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_setting_the_app_reads_is_wired_into_the_service(name: str) -> None:
    missing = settings_env_names() - set(environment(name))
    assert not missing, f"{name} does not set {sorted(missing)} (see service/settings.py)"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_the_service_sets_no_app_variable_that_the_app_would_silently_ignore(name: str) -> None:
    # Settings ignores unknown ENSEMBLE_* variables, so a typo here would go unnoticed.
    known = {alias for field in Settings.model_fields for alias in env_names(field)}
    ours = {key for key in environment(name) if key.startswith(("ENSEMBLE_", "STRIPE_"))}
    assert not ours - known, f"{name} sets {sorted(ours - known)}, which no setting reads"


def test_the_api_and_the_worker_share_one_environment() -> None:
    assert environment("api") == environment("worker")


def test_the_app_connects_to_the_compose_postgres_with_a_plain_libpq_url() -> None:
    raw = environment("api")["DATABASE_URL"]
    assert raw and raw.startswith("postgresql://"), raw
    url = urlsplit(with_defaults(raw))
    postgres = environment("postgres")
    assert url.hostname == "postgres"
    assert url.port in (None, 5432)
    assert url.username == with_defaults(postgres["POSTGRES_USER"])
    assert url.password == with_defaults(postgres["POSTGRES_PASSWORD"])
    assert url.path == "/" + with_defaults(postgres["POSTGRES_DB"])
    assert sqlalchemy_url(with_defaults(raw)).startswith("postgresql+psycopg://")


@pytest.mark.parametrize("name", APP_SERVICES)
def test_the_compose_defaults_give_valid_production_settings(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for field in Settings.model_fields:
        for env_name in env_names(field):
            monkeypatch.delenv(env_name, raising=False)
    for key, value in environment(name).items():
        monkeypatch.setenv(key, with_defaults(value))
    settings = Settings()
    assert settings.environment == "production"
    assert settings.database_url and urlsplit(settings.database_url).hostname == "postgres"
    assert not settings.stripe_api_key, "Stripe must stay off unless STRIPE_API_KEY is given"
    # ...and production starts with them (the api's metrics are on their own port).
    metrics_on_own_port = name == "worker" or "--metrics-port" in command(name)
    assert (
        production_refusals(
            settings, holds_demo_data=False, metrics_on_own_port=metrics_on_own_port
        )
        == []
    )


def test_compose_refuses_to_start_without_a_database_password_a_secret_key_or_a_public_url():
    required = set()
    for name in ("postgres", *APP_SERVICES):
        for value in environment(name).values():
            try:
                interpolate(value, {})
            except MissingVariable as exc:
                required.add(str(exc).split(":")[0])
    assert required == {"POSTGRES_PASSWORD", "ENSEMBLE_SECRET_KEY", "ENSEMBLE_PUBLIC_URL"}
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD: set POSTGRES_PASSWORD"):
        interpolate(environment("postgres")["POSTGRES_PASSWORD"], {"POSTGRES_PASSWORD": ""})


def test_the_old_default_database_password_is_refused_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shell = {**REQUIRED, "POSTGRES_PASSWORD": COMPOSE_DEFAULT_PASSWORD}
    for key, value in environment("worker").items():
        monkeypatch.setenv(key, interpolate(value, shell))
    settings = Settings()
    assert production_refusals(settings, holds_demo_data=False, metrics_on_own_port=True) == [
        "the database password is 'ensemble', the compose file's old default; set "
        "POSTGRES_PASSWORD (and DATABASE_URL) to a secret one"
    ]


def test_the_image_installs_the_project_and_serves_as_an_unprivileged_user() -> None:
    lines = [
        line.strip()
        for line in DOCKERFILE.read_text().replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[0].split()[:2] == ["FROM", "python:3.11-slim"]
    assert any(line.startswith("RUN") and "pip install ." in line for line in lines)
    users = [line.split()[1] for line in lines if line.startswith("USER")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    cmd = next(line for line in reversed(lines) if line.startswith("CMD"))
    assert all(part in cmd for part in ('"serve"', '"--no-scheduler"', '"0.0.0.0"', '"8000"'))
