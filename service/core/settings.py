"""Settings read from the environment (prefix ENSEMBLE_, except DATABASE_URL and STRIPE_*)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from limits import parse
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    # An empty variable (STRIPE_API_KEY=) means "not set", as compose files write it.
    # Errors never echo their input: some settings are secrets (ENSEMBLE_SECRET_KEY).
    model_config = SettingsConfigDict(
        env_prefix="ENSEMBLE_", extra="ignore", env_ignore_empty=True, hide_input_in_errors=True
    )

    environment: Literal["development", "production"] = "development"
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "ENSEMBLE_DATABASE_URL")
    )
    data_dir: Path = PROJECT_ROOT / ".ensemble"
    timezone: str = "America/Edmonton"
    horizon_weeks: int = Field(default=12, ge=1, le=104)
    # How long a portal sign-in lasts (routers/portal/signin.py); the key is checked on every
    # page load all the same, so a revoked key ends the session at once.
    portal_session_hours: int = Field(default=8, ge=1, le=24 * 30)
    db_pool_size: int = Field(default=10, ge=1, le=200)
    # Every wait on the database has a deadline (seconds). Requests: a statement, a row lock, an
    # idle open transaction, a free pooled connection, a new connection. Jobs and migrations
    # take `job_statement_timeout` instead of the request's statement timeout.
    db_statement_timeout: float = Field(default=5.0, gt=0, le=600)
    db_lock_timeout: float = Field(default=2.0, gt=0, le=600)
    db_idle_in_transaction_timeout: float = Field(default=10.0, gt=0, le=3600)
    db_pool_timeout: float = Field(default=2.0, gt=0, le=60)
    db_connect_timeout: int = Field(default=3, ge=1, le=60)
    job_statement_timeout: float = Field(default=120.0, gt=0, le=3600)
    # The last word: a request whose work is not committed (or refused) within this many
    # seconds answers 503 and saves nothing, whatever it was waiting for.
    request_timeout: float = Field(default=8.0, gt=0, le=600)
    # Request bodies: at most this many bytes, received within this many seconds.
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=100_000_000)
    body_timeout: float = Field(default=10.0, gt=0, le=600)
    # Rate limits ("N/second|minute|hour"): per API key, and per client address for requests
    # without a key or with a key that failed. Counted in a store every replica shares.
    rate_limits: bool = True
    rate_limit: str = "600/minute"
    rate_limit_anonymous: str = "120/minute"
    rate_limit_storage: str = "redis://127.0.0.1:6379/0"
    rate_limit_prefix: str = "ensemble"

    @field_validator("rate_limit", "rate_limit_anonymous")
    @classmethod
    def _rate(cls, value: str) -> str:
        try:
            parse(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a rate such as 600/minute") from exc
        return value

    stripe_api_key: SecretStr | None = Field(default=None, validation_alias="STRIPE_API_KEY")
    stripe_webhook_secret: SecretStr | None = Field(
        default=None, validation_alias="STRIPE_WEBHOOK_SECRET"
    )
    stripe_api_base: str = Field(
        default="https://api.stripe.com", validation_alias="STRIPE_API_BASE"
    )
    # Background work. `ensemble serve --no-scheduler` sets ENSEMBLE_SCHEDULER=false.
    scheduler: bool = True
    auto_invoice: Literal["off", "draft", "issue"] = "off"
    webhook_retry_schedule: str = "5s,5m,30m,2h,5h,10h,10h"
    # Lets webhook URLs be http and point at loopback or private addresses (development, tests).
    webhook_allow_private: bool = False
    # Attempts in flight to one webhook endpoint at most: slow endpoints hold only these.
    webhook_slots_per_endpoint: int = Field(default=8, ge=1, le=64)

    # Secrets at rest (webhook signing secrets, replayable responses, clinical notes) are
    # encrypted with ENSEMBLE_SECRET_KEY: one or more keys separated by commas, the first
    # encrypts and every one still decrypts (rotation: put the new key first). Required in
    # production; development falls back to a fixed development-only key.
    secret_key: SecretStr | None = None

    @field_validator("secret_key")
    @classmethod
    def _secret_keys(cls, value: SecretStr | None) -> SecretStr | None:
        from service.core.encryption import parse_keys

        if value is not None:
            parse_keys(value.get_secret_value())
        return value

    # Links Ensemble hands out (calendar feed URLs, links in webhooks) start with this, never
    # with the request's Host header.
    public_url: str = "http://127.0.0.1:8000"
    # The interactive docs (/docs, /redoc) and /openapi.json; turn off in production if wanted.
    docs: bool = True
    # /metrics answers only with `Authorization: Bearer <token>` when set (required in
    # production unless metrics are served on their own port with `ensemble serve
    # --metrics-port`).
    metrics_token: SecretStr | None = None
    # Metrics on their own port (bind it to a private network) instead of the API's /metrics;
    # `ensemble serve --metrics-port` sets it.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # Retention, enforced by the `apply-retention` job in bounded batches.
    idempotency_retention_hours: int = Field(default=24, ge=1, le=24 * 90)
    delivered_event_retention_days: int = Field(default=30, ge=1, le=3650)
    audit_retention_days: int = Field(default=730, ge=30, le=36500)
    # Outcomes: a therapist records a session's observation within this many days after it;
    # ratings are averaged only over at least this many participants and observations.
    observation_window_days: int = Field(default=14, ge=1, le=365)
    outcomes_min_group: int = Field(default=5, ge=1, le=1000)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        return normalize_public_url(value)

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        token = value.get_secret_value() if value else ""
        if value is not None and not (
            METRICS_TOKEN_LENGTH[0] <= len(token) <= METRICS_TOKEN_LENGTH[1]
            and token.isascii()
            and token.isprintable()
            and " " not in token
        ):
            low, high = METRICS_TOKEN_LENGTH
            raise ValueError(f"must be {low} to {high} printable ASCII characters without spaces")
        return value

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _retry_schedule(cls, value: str) -> str:
        parse_delays(value)
        return value

    @property
    def webhook_retry_delays(self) -> tuple[timedelta, ...]:
        return parse_delays(self.webhook_retry_schedule)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _production_is_explicit(self) -> Settings:
        # The embedded database is a development convenience; production names its server.
        if self.environment == "production" and not self.database_url:
            raise ValueError("DATABASE_URL is required when ENSEMBLE_ENVIRONMENT=production")
        return self


METRICS_TOKEN_LENGTH = (16, 500)


def normalize_public_url(value: str) -> str:
    """An absolute http(s) URL with a host and nothing after it, without a trailing slash."""
    text = value.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a URL") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL such as https://ensemble.example.org")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "?" in text or "#" in text:
        raise ValueError("must have no path, query or fragment (https://host[:port] only)")
    if parts.username or parts.password or not text.isprintable() or " " in text:
        raise ValueError("must have no credentials, spaces or control characters")
    return f"{parts.scheme}://{parts.netloc}"


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_delays(text: str) -> tuple[timedelta, ...]:
    """`5s,5m,30m,2h` → the waits before each retry; an empty schedule means no retries."""
    delays = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        number, unit = part[:-1], part[-1:]
        if unit not in _UNITS or not number.isdigit() or int(number) == 0:
            raise ValueError(f"{part!r} is not a delay like 5s, 5m, 2h or 1d")
        delays.append(timedelta(seconds=int(number) * _UNITS[unit]))
    if len(delays) > 20:
        raise ValueError("at most 20 retries")
    return tuple(delays)
