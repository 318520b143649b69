"""What production refuses: the settings (and database facts) that are fine on a laptop and
unsafe on a server. `ensemble serve` and `ensemble worker` refuse to start, with one line per
problem, when ENSEMBLE_ENVIRONMENT=production and any of these holds."""

from __future__ import annotations

import os
from ipaddress import ip_address
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from service.core.encryption import DEVELOPMENT_ONLY_KEY
from service.core.settings import Settings

# The password docker-compose.yml used to default to; anyone who read the file knows it.
COMPOSE_DEFAULT_PASSWORD = "ensemble"  # noqa: S105 (a known password, refused)
LOCAL_HOSTS = frozenset({"localhost", "localhost.localdomain"})


def database_password(settings: Settings) -> str | None:
    """The password the app connects with: the URL's, or libpq's PGPASSWORD."""
    if not settings.database_url:
        return None
    password = make_url(settings.database_url).password
    return str(password) if password is not None else os.environ.get("PGPASSWORD")


def _is_local(host: str) -> bool:
    if host.lower() in LOCAL_HOSTS:
        return True
    try:
        return ip_address(host).is_loopback or ip_address(host).is_unspecified
    except ValueError:
        return False


def production_refusals(
    settings: Settings, *, holds_demo_data: bool, metrics_on_own_port: bool
) -> list[str]:
    """One line per reason this process must not start in production ([] outside production,
    or when all is well). `metrics_on_own_port`: /metrics is not served on the public API
    (`ensemble serve --metrics-port`, or a process without the API such as the worker)."""
    if settings.environment != "production":
        return []
    refusals = []
    if settings.webhook_allow_private:
        refusals.append(
            "ENSEMBLE_WEBHOOK_ALLOW_PRIVATE is true: webhooks could reach loopback and private "
            "addresses; unset it"
        )
    keys = settings.secret_key.get_secret_value().split(",") if settings.secret_key else []
    if not keys:
        refusals.append(
            "ENSEMBLE_SECRET_KEY is not set: secrets at rest would be encrypted with the "
            "published development key"
        )
    elif DEVELOPMENT_ONLY_KEY in {key.strip() for key in keys}:
        refusals.append("ENSEMBLE_SECRET_KEY holds the published development key; make a new one")
    if not settings.database_url:
        refusals.append("DATABASE_URL is not set: production does not run the embedded database")
    elif database_password(settings) == COMPOSE_DEFAULT_PASSWORD:
        refusals.append(
            f"the database password is {COMPOSE_DEFAULT_PASSWORD!r}, the compose file's old "
            "default; set POSTGRES_PASSWORD (and DATABASE_URL) to a secret one"
        )
    if holds_demo_data:
        refusals.append(
            "the database holds the demo data (`ensemble demo` / `serve --demo`); use a "
            "database without it"
        )
    host = urlsplit(settings.public_url).hostname or ""
    if "public_url" not in settings.model_fields_set:
        refusals.append(
            "ENSEMBLE_PUBLIC_URL is not set: links handed out (calendar feeds) need the "
            "address clients reach"
        )
    elif _is_local(host):
        refusals.append(
            f"ENSEMBLE_PUBLIC_URL is {settings.public_url}, a local address clients cannot reach"
        )
    if settings.metrics_token is None and not metrics_on_own_port:
        refusals.append(
            "/metrics would be public: set ENSEMBLE_METRICS_TOKEN or serve metrics on their "
            "own port (`ensemble serve --metrics-port`)"
        )
    return refusals
